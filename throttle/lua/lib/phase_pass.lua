-- A phase of schedule.lua (statements, run where it includes them: see
-- lib/phase_push.lua), the scheduling pass: releases, in fair order, every queued item
-- the group's limits can start within the release lead, each admitted by
-- lib/admission.lua on the pass's clock. Strict priority between lanes, except a
-- lower lane whose credit covers its head's cost; a flow over its own tenant's cap
-- waits alone in the blocked zset; anything else that binds ends the pass (the group
-- is saturated until `due`). Included after lib/heads.lua, lib/stats.lua and
-- lib/release.lua; sets schedule.lua's due, saturated, wake_on, blocked_changed.

local function admit_head(h)
  local f = settings(h.flow)
  local others = f.others
  local keys, args = {state_key, leases_key}, {h.id, lead, f.spec}
  for j = 4, #h.meta do args[#args + 1] = h.meta[j] end
  if others ~= '' then
    local parts = split(others, '\31')
    for j = 1, #parts, 5 do
      keys[#keys + 1] = parts[j]
      for m = 1, 4 do args[#args + 1] = parts[j + m] end
    end
  end
  return admit_request(keys, args, false, lead, now)
end

while released < max_items do
  -- strict priority, except a lower lane whose credit covers its head's cost
  local chosen, h, by_credit = nil, nil, false
  local heads = {}
  for k, lane in ipairs(lanes) do
    if not chosen or lane.rate > 0 then heads[k] = head(lane) end
    if heads[k] then
      if not chosen then
        chosen, h = k, heads[k]
      elseif lane.credit > 0 and lane.credit >= heads[k].cost then
        chosen, h, by_credit = k, heads[k], true
        break
      end
    elseif lane.credit > 0 and (not chosen or lane.rate > 0) then
      lane.credit = 0  -- nothing ready: credit is not saved up
    end
  end
  if not chosen then break end
  local lane = lanes[chosen]
  local deadline = tonumber(h.meta[2]) or 0
  local queued_at = tonumber(h.meta[3]) or now
  if deadline > 0 and deadline <= now then
    record(lane, h, now - queued_at)
    pop(lane, h)
    emit(h, 0, 0, '', 'expired')
  else
    local reply = admit_head(h)
    local code = reply[1]
    if code == 1 and reply[2] < 0 then code = 2 end  -- a sliding window never fits it
    if code == 0 then
      record(lane, h, reply[3] / 1000 - queued_at)
      pop(lane, h)
      emit(h, reply[3], reply[5], reply[7], 'ok')
      if by_credit then lane.credit = math.max(0, lane.credit - h.cost) end
      for k = chosen + 1, #lanes do
        if heads[k] then lanes[k].credit = math.min(1, lanes[k].credit + lanes[k].rate * h.cost) end
      end
    elseif code == 1 and string.find(settings(h.flow).tenant_at, ',' .. reply[6] .. ',', 1, true) then
      -- over its own tenant's cap: it waits alone
      rcall('ZREM', lane.ready, h.flow)
      forget_flow(lane, h.flow)
      if rcall('ZADD', blocked_key, math.floor(reply[3] / 1000), h.flow) == 1 then
        touch(blocked_key)
      end
      blocked_changed = true
      trim(queues[h.flow])
      ready_n = ready_n - rcall('LLEN', prefix .. 'fq:' .. h.flow)
    elseif code == 1 then
      due, saturated = reply[3], true  -- the group is saturated until then
      wake_on = reply[7] or ''
      break
    elseif code == 5 then
      local first = rcall('ZRANGE', leases_key, 0, 0, 'WITHSCORES')
      if first[2] then due, saturated, wake_on = math.floor(tonumber(first[2]) * 1000), true, F_LEASE end
      break  -- every lease is held: a settle wakes the next pass
    else  -- cost above capacity, or the calendar does not cover now: the worker decides
      pop(lane, h)
      emit(h, 0, 0, '', 'refused')
    end
  end
end
