-- A reservation record, as written by admit.lua: {s = slot ms, d = {per dimension:
-- {algorithm, cost, pre TAT, post TAT, emission ms, calendar field or log member}}}.
-- undo_dimension gives dimension i's cost back; adjust_dimension debits `delta` more
-- (or refunds it, when negative) at time `now`.

local function undo_dimension(state_key, key, name, entry, now)
  local algo, cost = entry[1], entry[2]
  if cost == 0 then return end
  if algo == 'g' then
    local tat = tonumber(rcall('HGET', state_key, 't:' .. name) or '0')
    if fmt_ms(tat) == entry[4] then
      rcall('HSET', state_key, 't:' .. name, entry[3])  -- nothing since: restore exactly
    else
      rcall('HSET', state_key, 't:' .. name, fmt_ms(math.max(now, tat - cost * entry[5])))
    end
  elseif algo == 's' then
    if rcall('ZREM', key, entry[6]) == 1 then rcall('HINCRBYFLOAT', state_key, 's:' .. name, -cost) end
  elseif rcall('HEXISTS', key, entry[6]) == 1 then
    rcall('HINCRBYFLOAT', key, entry[6], -cost)
  end
end

local function adjust_dimension(state_key, key, name, entry, delta, now)
  local algo, cost = entry[1], entry[2]
  if delta == 0 then return end
  if algo == 'g' then
    local tat = tonumber(rcall('HGET', state_key, 't:' .. name) or '0')
    local after = math.max(tat, now) + delta * entry[5]
    if delta < 0 then after = math.max(after, now) end
    rcall('HSET', state_key, 't:' .. name, fmt_ms(after))
  elseif algo == 's' then
    local score = rcall('ZSCORE', key, entry[6])
    if score then
      local kept = math.max(0, cost + delta)
      rcall('ZREM', key, entry[6])
      rcall('ZADD', key, score, string.match(entry[6], '^(.*):') .. ':' .. kept)
      rcall('HINCRBYFLOAT', state_key, 's:' .. name, kept - cost)
    end
  elseif rcall('HEXISTS', key, entry[6]) == 1 then
    rcall('HINCRBYFLOAT', key, entry[6], math.max(delta, -cost))
  end
end
