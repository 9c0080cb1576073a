-- The admission of one request over every dimension of a limit group: the body of
-- admit.lua, kept apart so that the fair scheduler's script (issue 11) admits its
-- choices with the same code.
-- KEYS and ARGV are admit.lua's (see its header). yield_to_queue: refuse (code 4)
-- while the group has queued work ('b' > 0), so that a request that may only wait
-- briefly never jumps the fair queue. lease_ahead_ms (nil for none): under a
-- concurrency cap, a slot at most this far away takes its lease now, and no free lease
-- means nothing is reserved (code 5): the fair scheduler releases an item only with
-- its lease. now_ms (nil: read TIME): the caller's clock reading, for one that admits
-- many requests in one script.
-- ARGV[2] may carry a second bound, 'max wait ms:tenant wait ms': a slot that a
-- tenant's own dimension ('t:tenant.*') sets further away than that is not reserved
-- either (code 1). Reserving it would move every group dimension's TAT to that far
-- slot, and the gap before it would be lost to every other tenant; the fair queue
-- holds such a request until its tenant's cap lets it go (issue 11).

--@include lib/spec.lua

-- Sliding-log and calendar helpers, built only for a group that has such dimensions.
local function other_algorithms()
--@include lib/sliding.lua
--@include lib/calendar.lua
  return {
    s = {load = sliding_load, earliest = sliding_earliest, commit = sliding_commit},
    c = {load = calendar_load, earliest = calendar_earliest, commit = calendar_commit},
  }
end


local function admit_request(KEYS, ARGV, yield_to_queue, lease_ahead_ms, now_ms)
  local state_key, leases_key = KEYS[1], KEYS[2]
  local id = ARGV[1]
  local bound_at = string.find(ARGV[2], ':', 1, true)
  local max_wait, tenant_wait = tonumber(ARGV[2]), nil
  if bound_at then
    max_wait = tonumber(string.sub(ARGV[2], 1, bound_at - 1))
    tenant_wait = tonumber(string.sub(ARGV[2], bound_at + 1))
  end
  local spec, g, o, cap, lease_ttl, cold = decode_spec(ARGV[3])
  local now = now_ms or server_now_ms()  -- a caller admitting several passes its own

  -- values[k]: the state's spec[k] (positions: lib/spec.lua)
  local values = rcall('HMGET', state_key, unpack(spec, 1, 4 + 2 * g))
  if yield_to_queue and (tonumber(values[4]) or 0) > 0 then
    return {4, 0, 0, math.floor(now * 1000), 0, 0}
  end
  local multiplier = tonumber(values[2]) or 1
  local slot, binding = math.max(now, tonumber(values[1]) or 0), 0
  local tats, emissions, costs, fresh = {}, {}, {}, {}
  for i = 1, g do
    local n = 2 * g + 4 * i  -- spec[n + 1 .. n + 4]: period, capacity, tolerance, auto
    local tolerance = spec[n + 3]
    local learned = tonumber(values[2 * i + 4])
    local capacity = effective_capacity(spec[n + 2], spec[n + 4] == 1, learned, multiplier)
    local emission = spec[n + 1] / capacity
    local tat = tonumber(values[2 * i + 3])
    if tat then tat = tat / 1000 else
      tat = now + tolerance * (1 - cold)
      fresh[#fresh + 1] = spec[3 + 2 * i]
      fresh[#fresh + 1] = tat_text(tat)
    end
    local cost = tonumber(ARGV[3 + i])
    tats[i], emissions[i], costs[i] = tat, emission, cost
    -- A cost above a lowered capacity waits for a full bucket instead of never running.
    local earliest = tat + math.min(cost * emission, tolerance) - tolerance
    if earliest > slot then slot, binding = earliest, i end
  end

  local others, algorithms = {}, nil
  if o > 0 then
    algorithms = other_algorithms()
    local others_at = 3 + g + o  -- ARGV[3 + i]: the i-th dimension's cost
    for j = 1, o do
      local at = others_at + 4 * j - 3
      local d = {name = ARGV[at], algo = ARGV[at + 1], capacity = tonumber(ARGV[at + 2]),
                 cost = tonumber(ARGV[3 + g + j]), key = KEYS[2 + j], now = now}
      if d.cost > d.capacity then return {2, 0, 0, 0, 0, g + j} end
      if d.algo == 's' then
        -- a sliding log runs at its capacity times the multiplier while 429s hold that
        -- below 1 (throttle.limits.sliding_capacity); the window includes the wire margin
        d.capacity = d.capacity * math.min(multiplier, 1)
        d.window = tonumber(ARGV[at + 3])
        algorithms.s.load(d, state_key, now)
      else
        algorithms.c.load(d, ARGV[at + 3])
        if now < tonumber(d.starts[1]) or now >= tonumber(d.starts[#d.starts]) then
          return {3, 0, 0, 0, 0, g + j}
        end
      end
      others[j] = d
    end
  end
  -- GCRA bounds are constants; the others only move the slot later: iterate to a fixed point.
  local settled = true
  for _ = 1, 32 do
    settled = true
    for j, d in ipairs(others) do
      local e = algorithms[d.algo].earliest(d, slot)
      if e == nil then return {1, -1, 0, math.floor(now * 1000), 0, g + j, F_OTHER .. d.name} end
      if e > slot then slot, binding, settled = e, g + j, false end
    end
    if settled then break end
  end
  local wait = slot - now
  local tenant_bound = tenant_wait ~= nil and wait > tenant_wait and binding > 0
    and binding <= g and string.sub(spec[3 + 2 * binding], 1, #F_TENANT_TAT) == F_TENANT_TAT
  if not settled or (max_wait >= 0 and wait > max_wait) or tenant_bound then
    if #fresh > 0 and lease_ahead_ms ~= nil then
      -- For the fair scheduler (the one caller that only takes near slots) a cold
      -- bucket's start is kept, or every pass would find it just as far away.
      rcall('HSET', state_key, unpack(fresh))
      keep_for(state_key, 120000)
    end
    -- for the fair scheduler, the state field that names the binding dimension: a
    -- settle wakes its dispatcher only for a refund to that one (schedule.lua's 'w')
    local field = nil
    if lease_ahead_ms ~= nil then
      field = binding == 0 and F_PAUSE or binding <= g and spec[3 + 2 * binding]
        or F_OTHER .. others[binding - g].name
    end
    return {1, math.floor(wait * 1000), math.floor(slot * 1000), math.floor(now * 1000), 0, binding,
            field}
  end

  local take_lease = cap > 0 and (wait <= 0 or (lease_ahead_ms ~= nil and wait <= lease_ahead_ms))
  if take_lease then
    rcall('ZREMRANGEBYSCORE', leases_key, '-inf', now)
    if rcall('ZCARD', leases_key) >= cap then
      if lease_ahead_ms ~= nil then
        return {5, math.floor(wait * 1000), math.floor(slot * 1000), math.floor(now * 1000), 0, binding}
      end
      take_lease = false
    end
  end

  local record, writes, hold = {values[2] or ''}, {}, slot
  for i = 1, g do
    local cost = costs[i]
    local post = ''
    if cost > 0 then
      local exact = math.max(tats[i], slot) + cost * emissions[i]
      post = tat_text(exact)
      writes[#writes + 1] = spec[3 + 2 * i]
      writes[#writes + 1] = post
      if exact > hold then hold = exact end
    end
    record[i + 1] = ARGV[3 + i] .. ',' .. post .. ',' .. (values[2 * i + 4] or '')
  end
  -- The state lives a minute past its furthest TAT and the end of every sliding window
  -- whose sum it holds; 'x' saves a PTTL on every call.
  for _, d in ipairs(others) do
    if d.algo == 's' and slot + d.window > hold then hold = slot + d.window end
  end
  local expiry = nil
  if hold + 60000 > (tonumber(values[3]) or 0) then
    expiry = math.ceil(hold + 120000)
    writes[#writes + 1] = F_EXPIRY
    writes[#writes + 1] = expiry
  end
  if #writes > 0 then rcall('HSET', state_key, unpack(writes)) end
  if expiry then rcall('PEXPIRE', state_key, expiry - math.floor(now)) end
  for j, d in ipairs(others) do
    local where = ''
    if d.cost > 0 then
      if d.algo == 's' then
        where = algorithms.s.commit(d, state_key, slot, id)
      else
        where = algorithms.c.commit(d, slot)
      end
    end
    record[g + j + 1] = ARGV[3 + g + j] .. ',' .. where
  end

  local lease = 0
  if take_lease then
    rcall('ZADD', leases_key, now + lease_ttl, id)
    keep_for(leases_key, lease_ttl + 1000)
    lease = 1
  end
  return {0, math.floor(wait * 1000), math.floor(slot * 1000), math.floor(now * 1000), lease, binding,
          table.concat(record, '|')}
end
