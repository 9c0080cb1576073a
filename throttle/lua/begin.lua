--[[ begin: at a reserved slot, check the pause gate and take a concurrency lease.

  Called when admit.lua returned a slot in the future or no lease. A group paused
  after the reservation was made sends the caller back to admission.

  KEYS[1]  state hash of the group ('pause' field)
  KEYS[2]  concurrency leases zset
  ARGV[1]  reservation id
  ARGV[2]  concurrency cap, 0 for none
  ARGV[3]  lease ttl ms
  Returns {code, wait_us, now_us}
    code 0 go (lease held if capped), 1 paused for wait_us more, 2 no lease free now
]]
--@include lib/common.lua

local state_key, leases_key, id = KEYS[1], KEYS[2], ARGV[1]
local cap, lease_ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = server_now_ms()
local paused_until = tonumber(rcall('HGET', state_key, 'pause') or '0')
if paused_until > now then
  return {1, math.floor((paused_until - now) * 1000), math.floor(now * 1000)}
end
if cap > 0 then
  rcall('ZREMRANGEBYSCORE', leases_key, '-inf', now)
  if not rcall('ZSCORE', leases_key, id) and rcall('ZCARD', leases_key) >= cap then
    return {2, 0, math.floor(now * 1000)}
  end
  rcall('ZADD', leases_key, now + lease_ttl, id)
  keep_for(leases_key, lease_ttl + 1000)
end
return {0, 0, math.floor(now * 1000)}
