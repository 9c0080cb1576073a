-- Shared helpers, inlined into a script by the loader (throttle/scripts.py).
-- Times are milliseconds on the Redis server's clock, counted from the llmt epoch
-- (1700000000 s, 2023-11-14T22:13:20Z; throttle.limiter.EPOCH_MS). Small numbers keep
-- the µs when Redis turns them into strings (%.14g) and need no string.format.
if redis.replicate_commands then redis.replicate_commands() end
local rcall = redis.call

local function server_now_ms()
  local t = rcall('TIME')
  return (t[1] - 1700000000) * 1000 + t[2] / 1000
end

-- Extend a key's TTL to at least ttl_ms; when it must grow, add slack so the next
-- calls find it long enough and skip the PEXPIRE.
local function keep_for(key, ttl_ms)
  if rcall('PTTL', key) < ttl_ms then rcall('PEXPIRE', key, math.ceil(ttl_ms + 60000)) end
end
