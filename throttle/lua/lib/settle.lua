-- The steps of settle.lua, each a function of its arguments (and KEYS and ARGV; none
-- captures the script's locals, which would cost a closure per call): a bucket's TAT
-- after the actual cost and the provider's headers, the other dimensions' refunds,
-- the parked queue following the buckets, the AIMD raise, and the state's expiry.
-- Needs lib/common.lua, lib/spec_dims.lua, lib/rescale.lua.

-- A GCRA bucket's TAT `after` adjusted by `delta` units at `emission` ms per unit (a
-- bucket may go into debt; a refund never goes beyond a full bucket), then clamped
-- to what the provider says remains (`remaining` < 0: unknown), plus half its rounding.
local function settled_tat(after, now, emission, effective, delta, remaining, rounding)
  if delta ~= 0 then
    after = math.max(after, now) + delta * emission
    if delta < 0 then after = math.max(after, now) end
  end
  if remaining >= 0 then
    local ceiling_units = remaining + math.max(0, rounding) / 2
    local level = effective - (after - now) / emission
    if level > ceiling_units then after = now + (effective - ceiling_units) * emission end
  end
  return after
end

-- The sliding-log and calendar dimensions' part of a settle: each (its key KEYS[4 + j])
-- is adjusted by its delta (ARGV[delta_at + j]) where the admission put its cost. Returns whether a
-- refund went to the dimension that saturated the fair scheduler's last pass (or to
-- any, wake_on nil).
local function settle_others(state_key, id, rest, g, o, entries, delta_at, wake_on)
  local earlier = false
  for j = 1, o do
    local name, algo = spec_other(rest, j)
    local delta, key = tonumber(ARGV[delta_at + j]), KEYS[4 + j]
    local cost, where = entries[g + j][1], entries[g + j][2]
    if delta ~= 0 and cost > 0 then
      if algo == 's' then
        local score = rcall('ZSCORE', key, where)
        if score then
          local kept = math.max(0, cost + delta)
          rcall('ZREM', key, where)
          rcall('ZADD', key, score, id .. ':' .. kept)
          rcall('HINCRBYFLOAT', state_key, F_SLIDING_SUM .. name, kept - cost)
          if kept < cost and (wake_on == nil or wake_on == F_OTHER .. name) then earlier = true end
        end
      elseif rcall('HEXISTS', key, where) == 1 then
        rcall('HINCRBYFLOAT', key, where, math.max(delta, -cost))
      end
    end
  end
  return earlier
end

-- Parked tasks move with the reach of the queue of reservations (its binding bucket's
-- TAT beyond that bucket's tolerance): from `reach` to `reach_after`, unless the
-- bucket that changed its limit did not bind. When the queue moved earlier, so do the
-- other buckets' TATs (not `changed`), which the reservations' slots had pushed along
-- (a start slot debits every dimension at that slot). Returns the furthest TAT left.
local function follow_queue(state_key, parked_key, spec, g, now, reach, reach_after, changed,
                            furthest)
  local queue_factor = 1
  if reach > 0 then queue_factor = math.max(0, reach_after) / reach end
  if queue_factor == 1 then return furthest end
  rescale_parked(parked_key, now, queue_factor)
  if queue_factor < 1 then
    for i = 1, g do
      if not changed[i] then
        local tat_field, _, _, _, tolerance = spec_gcra(spec, g, i)
        local tat = rescale_tat(state_key, tat_field, now, tolerance, queue_factor)
        furthest = math.max(furthest, tat)
      end
    end
  end
  return furthest
end

-- After a clean window (no 429 decrease or increase for the spec's clean window), the
-- group's multiplier rises (throttle.limits.raised_multiplier): by `increase` up to 1;
-- up to `ceiling` in a group with auto dimensions that have not heard their limit,
-- doubling until its first decrease, then by the fraction `increase`. Each bucket's
-- queue follows its own change of rate, the parked queue the one that speeds up
-- least. Returns the multiplier, whether it rose, and the furthest TAT left.
local function raise_multiplier(state_key, parked_key, spec, rest, g, now, multiplier, ceiling,
                                last_decrease, last_increase, learned_of, furthest)
  if multiplier >= ceiling then return multiplier, false, furthest end
  if not (last_decrease or last_increase) then
    rcall('HSET', state_key, F_INCREASED, now)  -- an auto group's first clean window starts now
    return multiplier, false, furthest
  end
  local increase, clean_window = spec_aimd(rest)
  if now - math.max(last_decrease or 0, last_increase or 0) < clean_window then
    return multiplier, false, furthest
  end
  local raised
  if ceiling <= 1 then
    raised = math.min(1, multiplier + increase)
  elseif last_decrease then
    raised = math.min(ceiling, multiplier * (1 + increase))
  else
    raised = math.min(ceiling, multiplier * 2)
  end
  rcall('HSET', state_key, F_MULTIPLIER, raised, F_INCREASED, now)
  local queue = 0
  for i = 1, g do
    local tat_field, _, _, capacity, tolerance, auto = spec_gcra(spec, g, i)
    local factor = effective_capacity(capacity, auto, learned_of[i], multiplier)
      / effective_capacity(capacity, auto, learned_of[i], raised)
    if factor ~= 1 then
      furthest = math.max(furthest, rescale_tat(state_key, tat_field, now, tolerance, factor))
    end
    queue = math.max(queue, factor)
  end
  if queue > 0 and queue ~= 1 then rescale_parked(parked_key, now, queue) end
  return raised, true, furthest
end

-- The state lives a minute past its furthest TAT. F_EXPIRY, the state's expiry as last
-- set (`expiry_as_set`; admit.lua keeps it), saves the PTTL while it is far enough;
-- the expiry is only ever extended here (a pause may have set it further than any TAT).
local function outlive(state_key, furthest, now, expiry_as_set)
  if furthest <= now or furthest + 60000 <= (tonumber(expiry_as_set) or 0) then return end
  local ttl = rcall('PTTL', state_key)
  if ttl == -2 then return end
  local expiry = now + ttl
  if ttl < 0 or expiry < furthest + 60000 then
    expiry = math.ceil(furthest + 120000)
    rcall('PEXPIRE', state_key, expiry - math.floor(now))
  end
  rcall('HSET', state_key, F_EXPIRY, math.floor(expiry))
end
