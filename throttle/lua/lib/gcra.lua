-- GCRA, the continuous token bucket as a theoretical arrival time (TAT).
-- The bucket is full at time TAT and loses one unit per `emission` ms before it;
-- a cost c fits at time s when max(TAT, s) + c*emission - tolerance <= s.
-- State: field 't:<dimension>' of the group's state hash.

local function gcra_earliest(d, s)
  return math.max(s, d.tat + d.cost * d.emission - d.tolerance)
end

local function gcra_commit(d, state_key, slot)
  if d.cost == 0 then return end
  local post = math.max(d.tat, slot) + d.cost * d.emission
  rcall('HSET', state_key, 't:' .. d.name, fmt_ms(post))
  d.pre, d.post = fmt_ms(d.tat), fmt_ms(post)
  d.hold_ms = post
end
