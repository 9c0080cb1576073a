-- A fair scheduler's flow (one FIFO list of item ids per (lane, tenant)) entering or
-- leaving its lane's ready zset (schedule.lua only). Included after schedule.lua's
-- locals; uses its sched_key, and touch (lib/lanes.lua).

-- A flow becomes ready (after a push into it while empty, or when unblocked).
local function make_ready(lane, flow, finish)
  -- (a key is only ever created by adding a member: touch it only then)
  if rcall('ZADD', lane.ready, math.max(lane.v, finish), flow) == 1 then touch(lane.ready) end
end

-- A flow emptied: forget its settings, keep its finish tag while it is ahead of V.
local function retire(lane, flow, finish)
  rcall('ZREM', lane.ready, flow)
  rcall('HDEL', sched_key, F_Q_FINISH .. flow, F_Q_WEIGHT .. flow, F_Q_SPEC .. flow,
        F_Q_OTHERS .. flow, F_Q_TENANT_DIMS .. flow, F_Q_APART .. flow)
  if finish > lane.v and rcall('ZADD', lane.idle, finish, flow) == 1 then touch(lane.idle) end
end
