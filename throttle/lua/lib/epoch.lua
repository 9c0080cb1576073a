-- A new rate epoch: the group's rate changed under its queue of reservations. Every
-- GCRA bucket forgets its future reservations (TAT at most now + tolerance), and every
-- parked task becomes due at once, in its old order (scores scaled down by 1e9 stay
-- ordered and fall in the past): released, it finds its reservation revoked and queues
-- again at the new rate.

local function new_epoch(state_key, parked_key, now, names, tolerances)
  rcall('HINCRBY', state_key, 'e', 1)
  for k, name in ipairs(names) do
    local field = 't:' .. name
    local tat = tonumber(rcall('HGET', state_key, field))
    if tat and tat > now + tolerances[k] then rcall('HSET', state_key, field, now + tolerances[k]) end
  end
  if rcall('EXISTS', parked_key) == 1 then
    rcall('ZUNIONSTORE', parked_key, 1, parked_key, 'WEIGHTS', 1e-9)
  end
end
