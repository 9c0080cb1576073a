--[[ pause: close a limit group's gate for every worker until now + duration.

  Never shortens a pause already in force. Admission gives no slot before the gate
  opens; reservations made before the pause are sent back by begin.lua.

  KEYS[1]  state hash of the group ('pause' field, ms on this server's clock)
  ARGV[1]  duration ms
  Returns {extended (1 or 0), paused_until_ms, now_ms}
]]
--@include lib/common.lua

local state_key, duration = KEYS[1], tonumber(ARGV[1])
local now = server_now_ms()
local wanted = now + duration
local current = tonumber(rcall('HGET', state_key, 'pause') or '0')
if current >= wanted then return {0, fmt_ms(current), fmt_ms(now)} end
rcall('HSET', state_key, 'pause', fmt_ms(wanted))
keep_for(state_key, duration + 60000)
return {1, fmt_ms(wanted), fmt_ms(now)}
