--[[ pause: close a limit group's gate for every worker until now + duration, and on
  a provider 429 lower the group's AIMD multiplier, once per epoch.

  Never shortens a pause already in force. Admission gives no slot before the gate
  opens; reservations made before the pause are sent back by begin.lua.
  An epoch lasts from a decrease until its pause is over and one clean window more
  ('q'): the 429s in it are one signal (fifty simultaneous 429s, or requests that left
  at the old rate, decrease once); a 429 after it means the lower rate is still too
  high. The queue of reservations stretches to the lower rate (lib/rescale.lua). A
  group whose provider reports its limits ('k:<dim>' learned by settle.lua) follows
  those instead: its 429s pause it but do not lower its rate.

  KEYS[1]  state hash of the group (throttle/fields.py: 'pause' ms, 'm', 'd' last decrease,
           'q' end of the decrease's epoch ms)
  KEYS[2]  parked tasks zset
  ARGV[1]  duration ms
  ARGV[2]  1: the pause answers a provider 429 (its epoch lasts the spec's clean window
           past the pause, and the multiplier decreases by the spec's factor, not below
           its floor); 0: a manual pause, no decrease
  ARGV[3]  the group's spec (lib/spec.lua), as admit.lua's ARGV[3]
  Returns {extended (1 or 0), paused_until_us, now_us, decreased (1 or 0), multiplier x 1e6}
]]
--@include lib/common.lua
--@include lib/spec.lua
--@include lib/spec_dims.lua
--@include lib/rescale.lua

local state_key, duration = KEYS[1], tonumber(ARGV[1])
local spec, g = decode_spec(ARGV[3])
local _, clean_window, _, factor, floor = spec_aimd(decode_rest(ARGV[3], spec))
local epoch = ARGV[2] == '1' and clean_window or -1
local now = server_now_ms()
local values = rcall('HMGET', state_key, F_PAUSE, F_MULTIPLIER, F_EPOCH_END)
local current, multiplier = tonumber(values[1]) or 0, tonumber(values[2]) or 1
local decreased, furthest = 0, now
local heard = false
for i = 1, g do
  local _, learned_field = spec_gcra(spec, g, i)
  heard = heard or rcall('HEXISTS', state_key, learned_field) == 1
end
if epoch >= 0 and not heard and now >= (tonumber(values[3]) or -1) then
  local lowered = math.max(floor, multiplier * factor)
  rcall('HSET', state_key, F_MULTIPLIER, lowered, F_DECREASED, now,
        F_EPOCH_END, math.max(current, now + duration) + epoch)
  for i = 1, g do
    local tat_field, _, _, _, tolerance = spec_gcra(spec, g, i)
    local tat = rescale_tat(state_key, tat_field, now, tolerance, multiplier / lowered)
    furthest = math.max(furthest, tat)
  end
  rescale_parked(KEYS[2], now, multiplier / lowered)
  multiplier, decreased = lowered, 1
end
local wanted, extended = now + duration, 0
if wanted > current then
  rcall('HSET', state_key, F_PAUSE, wanted)
  current, extended = wanted, 1
end
keep_for(state_key, math.max(current, furthest) - now + 60000)
return {extended, math.floor(current * 1000), math.floor(now * 1000), decreased,
        math.floor(multiplier * 1e6)}
