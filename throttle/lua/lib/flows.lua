-- The flows of the fair scheduler: one FIFO list of item ids per (lane, tenant), its
-- settings in the scheduler hash, its place in its lane's ready zset. Here, a flow
-- becoming ready or idle, and the push of an item; lib/heads.lua reads their heads in
-- a pass. For schedule.lua only, included after its locals, which these functions
-- share (upvalues): sched_key, payloads_key, blocked_key, releasing_key, prefix, now,
-- lead, ttl, expiry, counters, blocked_soonest, ready_n and all_n (the counts they
-- keep), lanes and lane_of, and touch and read_tags (lib/lanes.lua).

-- A flow becomes ready (after a push into it while empty, or when unblocked).
local function make_ready(lane, flow, finish)
  -- (a key is only ever created by adding a member: touch it only then)
  if rcall('ZADD', lane.ready, math.max(lane.v, finish), flow) == 1 then touch(lane.ready) end
end

-- A flow emptied: forget its settings, keep its finish tag while it is ahead of V.
local function retire(lane, flow, finish)
  rcall('ZREM', lane.ready, flow)
  rcall('HDEL', sched_key, 'f:' .. flow, 'w:' .. flow, 'p:' .. flow, 'o:' .. flow, 'i:' .. flow,
        'a:' .. flow)
  if finish > lane.v and rcall('ZADD', lane.idle, finish, flow) == 1 then touch(lane.idle) end
end

-- The item ARGV[6] (its payload stored already) joins its flow ARGV[9] in `lane`; a
-- flow that was empty becomes ready with its finish tag; the queue's keys get their
-- expiry renewed once they near it. (The push's ARGV: lib/push.lua.)
local function queue_item(lane)
  local flow = ARGV[9]
  if all_n == 0 then touch(payloads_key) end  -- the first item since it emptied
  local flow_key = prefix .. 'fq:' .. flow
  local length = rcall('RPUSH', flow_key, ARGV[6])
  -- a new list gets the queue's ttl; a long one has it renewed now and then (every
  -- item in it is younger than the ttl, which is longer than any deadline), and its
  -- settings too (a changed plan reaches a flow that never empties)
  local renew = length == 1 or length % 32 == 0
  if renew then rcall('PEXPIRE', flow_key, ttl) end
  local settings = flow_settings(flow)
  all_n = all_n + 1
  if length == 1 then
    read_tags(lanes, counters)
    local finish = tonumber(rcall('ZSCORE', lane.idle, flow)) or lane.v
    rcall('ZREM', lane.idle, flow)
    rcall('HSET', sched_key, 'f:' .. flow, finish, unpack(settings))
    make_ready(lane, flow, finish)
    ready_n = ready_n + 1
  else
    if renew then rcall('HSET', sched_key, unpack(settings)) end
    if not rcall('ZSCORE', blocked_key, flow) then ready_n = ready_n + 1 end
  end
  if now + ttl > expiry + 60000 then
    expiry = math.floor(now + ttl + 120000)
    rcall('HSET', sched_key, 'e', expiry)  -- also keeps the hash from emptying below
    local keys = {sched_key, payloads_key, releasing_key, blocked_key}
    for _, l in ipairs(lanes) do keys[#keys + 1] = l.ready; keys[#keys + 1] = l.idle end
    for _, key in ipairs(keys) do rcall('PEXPIRE', key, math.floor(expiry - now)) end
  end
end

-- Blocked flows whose tenant's cap lets them go within the lead become ready again;
-- returns whether the blocked zset was read (its soonest score is then read again).
local function unblock()
  if not (blocked_soonest == nil or (blocked_soonest > 0 and blocked_soonest <= now + lead)) then
    return false
  end
  for _, flow in ipairs(rcall('ZRANGEBYSCORE', blocked_key, '-inf', now + lead)) do
    rcall('ZREM', blocked_key, flow)
    local lane = lanes[lane_of[string.sub(flow, 1, string.find(flow, '|', 1, true) - 1)]]
    local length = rcall('LLEN', prefix .. 'fq:' .. flow)
    if lane and length > 0 then
      make_ready(lane, flow, tonumber(rcall('HGET', sched_key, 'f:' .. flow)) or lane.v)
      ready_n = ready_n + length
    end
  end
  return true
end

