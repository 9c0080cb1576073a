-- Shared helpers, inlined into a script by the loader (throttle/scripts.py).
-- Every time is in milliseconds on the Redis server's clock; fractions are kept to the µs.
if redis.replicate_commands then redis.replicate_commands() end
local rcall = redis.call

local function server_now_ms()
  local t = rcall('TIME')
  return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end

local function fmt_ms(x)
  return string.format('%.3f', x)
end

-- Extend a key's TTL to at least ttl_ms (never shortens it).
local function keep_for(key, ttl_ms)
  local current = rcall('PTTL', key)
  if current < ttl_ms then rcall('PEXPIRE', key, math.ceil(ttl_ms)) end
end
