-- The heads of the fair scheduler's flows in a pass (schedule.lua only): each flow's
-- settings and item ids read once, each lane's best flow and its head item, and the
-- pop of a released head. Included after lib/flows.lua; shares schedule.lua's locals
-- sched_key, payloads_key, prefix, ready_n and all_n, and split (lib/lanes.lua).

-- Per flow, read once per pass: its settings, and its next item id once known.
local flows = {}
local function settings(flow)
  local f = flows[flow]
  if not f then
    local got = rcall('HMGET', sched_key, F_Q_SPEC .. flow, F_Q_OTHERS .. flow, F_Q_WEIGHT .. flow,
                      F_Q_TENANT_DIMS .. flow, F_Q_APART .. flow, F_Q_FLOW_STATS .. flow)
    f = {spec = got[1], others = got[2] or '', weight = tonumber(got[3]) or 1, tenant_at = got[4] or '',
         apart = got[5] == '1', stats_field = got[6]}
    flows[flow] = f
  end
  return f
end

-- A flow's item ids, read 8 at a time (LRANGE; one at first); what a pass takes is trimmed off
-- its list once, at the end (trim), or before its length is read.
local ID_BATCH = 8
local queues = {}
local function next_id(flow)
  local q = queues[flow]
  if not q then
    q = {ids = {}, at = 1, popped = 0, key = prefix .. 'fq:' .. flow}
    queues[flow] = q
  end
  if q.at > #q.ids then
    if q.ended then return nil end
    -- the first read takes one id: most passes end on a head they cannot release
    local wanted = q.popped == 0 and 1 or ID_BATCH
    q.ids, q.at = rcall('LRANGE', q.key, q.popped, q.popped + wanted - 1), 1
    q.ended = #q.ids < wanted
  end
  return q.ids[q.at]
end
local function trim(q)
  if q.popped > 0 then rcall('LTRIM', q.key, q.popped, -1) end
  q.ids, q.at, q.popped, q.ended = {}, 1, 0, nil
end

-- A lane's ready zset is rescored once per pass per flow (flush_scores, before the
-- lane's next ZRANGE and at the end); meanwhile the flow just popped stays the lane's
-- best while its new tag is below the runner-up's, and its next item is the lane's
-- head without a read.
local function flush_scores(lane)
  if lane.pending then
    local args = {}
    for flow, score in pairs(lane.pending) do args[#args + 1], args[#args + 2] = score, flow end
    if #args > 0 then rcall('ZADD', lane.ready, unpack(args)) end
    lane.pending = nil
  end
end
local function forget_flow(lane, flow)
  if lane.pending then lane.pending[flow] = nil end
  lane.h, lane.top = nil, nil
end

-- The head of a lane's best flow: flow, start tag, item id, meta fields, payload.
local function head(lane)
  if lane.empty then return nil end  -- a lane found empty stays so within the pass
  if lane.h then return lane.h end
  local flow, start = lane.top, lane.top_start
  if not flow then
    flush_scores(lane)
    local best = rcall('ZRANGE', lane.ready, 0, 1, 'WITHSCORES')
    if not best[1] then lane.empty = true; return nil end
    flow, start = best[1], tonumber(best[2])
    lane.runner, lane.runner_start = best[3], tonumber(best[4])
  end
  local id = next_id(flow)
  if not id then  -- emptied elsewhere (its list expired): drop the flow
    rcall('ZREM', lane.ready, flow)
    forget_flow(lane, flow)
    return head(lane)
  end
  local text = rcall('HGET', payloads_key, id) or ''
  local sep = string.find(text, '\30', 1, true)
  local h = {flow = flow, start = start, id = id}
  lane.h = h
  if sep then
    h.meta, h.payload = split(string.sub(text, 1, sep - 1), ','), string.sub(text, sep + 1)
  else  -- queued by an older version: its meta is in the scheduler hash
    h.meta, h.payload, h.legacy = split(rcall('HGET', sched_key, 'm:' .. id) or '0,0', ','), text, true
  end
  h.cost = tonumber(h.meta[1]) or 0
  return h
end

local function pop(lane, h)
  local q = queues[h.flow]
  q.at, q.popped = q.at + 1, q.popped + 1
  ready_n, all_n = ready_n - 1, all_n - 1
  local f = settings(h.flow)
  local finish = h.start + h.cost / f.weight
  lane.v, lane.h = h.start, nil
  if next_id(h.flow) then
    f.finish = finish  -- F_Q_FINISH written with the pass's counters
    lane.pending = lane.pending or {}
    lane.pending[h.flow] = finish
    -- (Redis takes a Lua number exactly: '%.17g' or the shortest exact text; a tie
    -- goes to the zset, whose order of members Lua's locale-bound '<' may not share)
    local runner, runner_start = lane.runner, lane.runner_start
    if not runner or finish < runner_start then
      lane.top, lane.top_start = h.flow, finish
    else
      lane.top = nil
    end
  else
    trim(q)  -- the list empties: its key goes
    queues[h.flow] = nil
    forget_flow(lane, h.flow)
    retire(lane, h.flow, finish)
    flows[h.flow] = nil
  end
end

-- The finish tags a pass changed, as HSET arguments.
local function finish_writes(writes)
  for flow, f in pairs(flows) do
    if f.finish then writes[#writes + 1], writes[#writes + 2] = F_Q_FINISH .. flow, f.finish end
  end
end
