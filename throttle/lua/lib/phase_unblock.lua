-- A phase of schedule.lua (statements, run where it includes them: see
-- lib/phase_push.lua): blocked flows whose tenant's cap lets them go within the lead
-- become ready again. Sets schedule.lua's blocked_changed when it read the blocked
-- zset (its soonest score is then read again after the pass) and counts ready_n.
if blocked_soonest == nil or (blocked_soonest > 0 and blocked_soonest <= now + lead) then
  blocked_changed = true
  for _, flow in ipairs(rcall('ZRANGEBYSCORE', blocked_key, '-inf', now + lead)) do
    rcall('ZREM', blocked_key, flow)
    local lane = lanes[lane_of[string.sub(flow, 1, string.find(flow, '|', 1, true) - 1)]]
    local length = rcall('LLEN', prefix .. 'fq:' .. flow)
    if lane and length > 0 then
      make_ready(lane, flow, tonumber(rcall('HGET', sched_key, F_Q_FINISH .. flow)) or lane.v)
      ready_n = ready_n + length
    end
  end
end
