--[[ pause: close a limit group's gate for every worker until now + duration.

  Never shortens a pause already in force. Admission gives no slot before the gate
  opens; reservations made before the pause are sent back by begin.lua.

  KEYS[1]  state hash of the group ('pause' field, ms)
  ARGV[1]  duration ms
  Returns {extended (1 or 0), paused_until_us, now_us}
]]
--@include lib/common.lua

local state_key, duration = KEYS[1], tonumber(ARGV[1])
local now = server_now_ms()
local wanted = now + duration
local current = tonumber(rcall('HGET', state_key, 'pause') or '0')
if current >= wanted then return {0, math.floor(current * 1000), math.floor(now * 1000)} end
rcall('HSET', state_key, 'pause', wanted)
keep_for(state_key, duration + 60000)
return {1, math.floor(wanted * 1000), math.floor(now * 1000)}
