-- Shared helpers, inlined into a script by the loader (throttle/scripts.py). The
-- loader also writes each F_<NAME>, a state hash field, as its string literal
-- (throttle/fields.py).
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

-- GCRA TATs (the state's 't:<dim>' fields, and their copies in reservation records) are
-- stored as whole µs written with '%d': formatting an integer costs a fraction of the
-- %.17g Redis applies to a float, and a stored TAT equals its record copy as a string.
-- Rounding is up: a stored TAT is never earlier than the exact one.
local function tat_ms(raw)
  if raw then return tonumber(raw) / 1000 end
  return nil
end

local function tat_text(ms)
  return string.format('%d', math.ceil(ms * 1000 - 0.001))
end

-- The capacity a GCRA dimension runs at (throttle.limits.effective_capacity): a
-- configured capacity is a ceiling that a learned limit can only lower; an auto one
-- (`auto` true) follows the learned limit either way. Once a limit is learned, the
-- multiplier can only slow the dimension down, never push it past what was heard.
local function effective_capacity(configured, auto, learned, multiplier)
  if learned and learned > 0 then
    if auto or learned < configured then configured = learned end
    if multiplier > 1 then multiplier = 1 end
  end
  return configured * multiplier
end
