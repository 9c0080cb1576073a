-- The steps of settle.lua, each a function of its arguments (and KEYS and ARGV; none
-- captures the script's locals, which would cost a closure per call): a bucket's TAT
-- after the actual cost and the provider's headers, the other dimensions' refunds,
-- the parked queue following the buckets, the AIMD raise, and the state's expiry.
-- Needs lib/common.lua, lib/spec_dims.lua, lib/rescale.lua.
--
-- Each dimension is adjusted by delta = actual - reserved, at the current time and
-- rate: a positive delta debits more (a bucket may go into debt: later slots wait it
-- out), a negative one refunds, never beyond a full bucket. Then, per GCRA dimension, the
-- provider's rate-limit headers: a bucket fuller than the provider says it is
-- ('remaining', plus half its rounding) is clamped down to it, and the limit it reports
-- is learned ('k:<dim>'; admit.lua never runs above it nor above the configuration);
-- a different limit, like a change of the multiplier, rescales that bucket's queue to
-- the new rate (lib/rescale.lua). Parked tasks move only as far as the queue's reach
-- does (the TAT of the bucket that sets the slots), so a bucket that does not bind
-- learning a higher limit moves nothing; when the queue moves earlier, the other
-- dimensions' TATs, which its slots had pushed along, move with it.
-- Finally, a clean window (no 429 decrease or increase for `clean_window` ms) raises
-- the group's AIMD multiplier 'm' (throttle.limits.raised_multiplier): by `increase`
-- up to 1; in a group with auto dimensions that have not heard their limit, up to
-- `ceiling`, doubling until the group's first decrease ('d'), then by the fraction
-- `increase`. The queue follows each dimension's own change of rate. The lease is
-- released.

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
        if delta < 0 and (wake_on == nil or wake_on == F_OTHER .. name) then earlier = true end
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

-- Every GCRA bucket settled (the loop of settle.lua): the actual cost at today's rate,
-- the provider's remaining and limit (learned; a changed limit rescales the bucket's
-- queue), written in one HSET. `head` is settle.lua's read of the state hash. Returns
-- the learned capacities, which buckets changed rate, the AIMD ceiling, the queue's
-- reach before and after, whether the bucket that set it changed, whether queued work
-- may start sooner, and the latest TAT left.
local function settle_buckets(state_key, spec, rest, g, head, now, multiplier, wake_on)
  local _, _, auto_ceiling = spec_aimd(rest)
  local writes, learned_of, changed, ceiling = {}, {}, {}, 1
  -- The queue of reservations reaches as far as its binding bucket's TAT beyond that
  -- bucket's tolerance: `reach` before and after a change of limits, `binding_changed`
  -- whether the bucket that set it was one of those whose limit changed.
  local reach, reach_after, binding_changed = 0, 0, false
  -- Whether this settle lets queued work start sooner (a refund where it binds, a higher rate)
  local earlier = false
  local furthest = now  -- the latest TAT this settle leaves: the state must outlive it
  for i = 1, g do
    local tat_field, learned_field, period, capacity, tolerance, auto = spec_gcra(spec, g, i)
    local at = 4 * i - 1  -- ARGV[at .. at + 3]: delta, remaining, limit, rounding
    local limit = tonumber(ARGV[at + 2])
    local tat, learned = tat_ms(head[5 + 2 * i]) or 0, tonumber(head[6 + 2 * i])
    local before = effective_capacity(capacity, auto, learned, multiplier)
    if limit > 0 and limit ~= learned then
      writes[#writes + 1], writes[#writes + 2] = learned_field, limit
      learned = limit
    end
    learned_of[i] = learned
    if auto and not learned then ceiling = auto_ceiling end
    local effective = effective_capacity(capacity, auto, learned, multiplier)
    local after = tat
    local queued = math.max(0, tat - now - tolerance)
    if effective ~= before then  -- the provider's limit changed: rescale this bucket's queue
      after = rescaled_tat(tat, now, tolerance, before / effective)
      reach_after = math.max(reach_after, after - now - tolerance)
      changed[i] = true
    end
    if queued > reach then reach, binding_changed = queued, changed[i] == true end
    -- the delta at today's rate: a change since rescaled the queue to it
    after = settled_tat(after, now, period / effective, effective, tonumber(ARGV[at]),
                        tonumber(ARGV[at + 1]), tonumber(ARGV[at + 3]))
    if after ~= tat then writes[#writes + 1], writes[#writes + 2] = tat_field, tat_text(after) end
    if after < tat and (wake_on == nil or wake_on == tat_field) then earlier = true end
    furthest = math.max(furthest, after)
  end
  if #writes > 0 then rcall('HSET', state_key, unpack(writes)) end
  return learned_of, changed, ceiling, reach, reach_after, binding_changed, earlier, furthest
end
