--[[ floor_gcra4: the least an atomic admission over four GCRA buckets can do in one
  script, as a benchmark floor (not used by the limiter). It reads the server clock and
  four TATs, and writes four TATs back; no pause gate, no AIMD multiplier, no learned
  limits, no reservation record, no slot queue (a request that does not fit is refused).

  KEYS[1]  hash of the four TATs (whole µs, fields 'a' 'b' 'c' 'd')
  ARGV[1]  emission interval µs per unit, the same for all four
  ARGV[2]  burst tolerance µs
  ARGV[3]  cost of each request, in units
  Returns 1 admitted, 0 refused
]]
local t = redis.call('TIME')
local now = t[1] * 1000000 + t[2]
local emission, tolerance, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tats = redis.call('HMGET', KEYS[1], 'a', 'b', 'c', 'd')
local new = {}
for i = 1, 4 do
  local tat = math.max(tonumber(tats[i]) or now, now) + cost * emission
  if tat - now > tolerance then return 0 end
  new[i] = string.format('%d', tat)
end
redis.call('HSET', KEYS[1], 'a', new[1], 'b', new[2], 'c', new[3], 'd', new[4])
return 1
