-- The group's rate changed by `factor` (old rate / new rate) under its queue of
-- reservations: stretch or shrink that queue around now. Each GCRA bucket keeps its
-- level in units (the part of TAT beyond now + tolerance, the queue, scales by the
-- factor), and every parked task's slot moves the same way, keeping its order and its
-- reservation. Tasks already holding a near slot in a worker (at most the hold
-- horizon) keep it.

local function rescaled_tat(tat, now, tolerance, factor)
  if tat <= now then return tat end
  return now + tolerance + (tat - now - tolerance) * factor
end

-- The bucket whose TAT is the state's `field`; returns its TAT after the change (0 if
-- it has none).
local function rescale_tat(state_key, field, now, tolerance, factor)
  local tat = tat_ms(rcall('HGET', state_key, field))
  if tat and tat > now then
    tat = rescaled_tat(tat, now, tolerance, factor)
    rcall('HSET', state_key, field, tat_text(tat))
  end
  return tat or 0
end

local function rescale_parked(parked_key, now, factor)
  local entries = rcall('ZRANGEBYSCORE', parked_key, '(' .. now, '+inf', 'WITHSCORES')
  for j = 1, #entries, 2 do
    rcall('ZADD', parked_key, now + (entries[j + 1] - now) * factor, entries[j])
  end
end
