-- A phase of schedule.lua (statements, run where it includes them: see
-- lib/phase_push.lua), after the pass: when the next pass is due, the lanes' scores
-- and the flows' lists brought up to date, the released items published, a few full
-- tenant buckets swept (CHORES), and the counters that changed written back with the
-- state's 'b' and 'w' (lib/push.lua's mark_queued).
-- The sweep: once a second, and on every pass while one is part way, 64 fields of the
-- state hash (HSCAN); a tenant's bucket that is full again is deleted, so ten thousand
-- tenants seen once leave nothing behind while the group stays busy (a tenant seen
-- again starts as a cold bucket); an idle group's keys expire as a whole.
do
  if released >= max_items then due = math.floor(now * 1000) end  -- more may be ready at once
  if blocked_changed then
    local soonest = rcall('ZRANGE', blocked_key, 0, 0, 'WITHSCORES')
    blocked_soonest = tonumber(soonest[2]) or 0
  end
  if due < 0 and blocked_soonest > 0 then due = math.floor(blocked_soonest * 1000) end
  out[2], out[3] = due, released
  for _, lane in ipairs(lanes) do flush_scores(lane) end
  for _, q in pairs(queues) do trim(q) end
  publish()
  if chores_due or sweep_cursor ~= '0' then  -- full tenant buckets go
    local sweep = rcall('HSCAN', state_key, sweep_cursor, 'MATCH', F_TENANT_TAT .. '*', 'COUNT', 64)
    for j = 1, #sweep[2], 2 do
      local tat = tat_ms(sweep[2][j + 1])
      if tat and tat <= now then rcall('HDEL', state_key, sweep[2][j]) end
    end
    sweep_cursor = sweep[1]
  end

  -- Only what changed is written (all of it when the hash had expired)
  local writes, anew = {}, expiry <= now
  for field, value in pairs({[F_Q_READY] = ready_n, [F_Q_ITEMS] = all_n, [F_Q_EXPIRY] = expiry,
                             [F_Q_DUE] = due, [F_Q_SATURATED] = saturated and 1 or 0,
                             [F_Q_SWEEP] = sweep_cursor, [F_Q_WAKE_ON] = wake_on,
                             [F_Q_BLOCKED_SOONEST] = blocked_soonest}) do
    if anew or value ~= read[field] then writes[#writes + 1], writes[#writes + 2] = field, value end
  end
  if chores_due then writes[#writes + 1], writes[#writes + 2] = F_Q_CHORES, math.floor(now) end
  stats_writes(writes)
  finish_writes(writes)
  tag_writes(lanes, writes, anew)
  if #writes > 0 then rcall('HSET', sched_key, unpack(writes)) end
  if anew then touch(sched_key) end  -- written anew since it expired
  keep_touched(expiry > now and expiry or now + ttl, now)
  if chores_due or ready_n ~= b_before or wake_on ~= wake_on_before then
    -- (written when it changes, and once a second in case the state hash expired)
    if ready_n > 0 then
      mark_queued(state_key, ready_n, ttl, wake_on)
    else
      rcall('HDEL', state_key, F_QUEUED, F_WAKE_ON)
    end
  end
end
