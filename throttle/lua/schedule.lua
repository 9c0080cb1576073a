--[[ schedule: queue one item (optional) and run one pass of the group's fair scheduler
  (docs/fair-scheduler.md): release, in fair order (lib/heads.lua: start-time fair
  queueing between the (lane, tenant) flows of a lane, strict priority between lanes
  with minimum-share credit), every queued item the limits can start within the
  release lead, each with its reservation made by admit.lua's admission, atomically on
  the server's clock. A flow whose tenant dimension binds waits in KEYS[6]; a group
  dimension, the pause gate or the lease cap ends the pass and says when to run the
  next. Items past their deadline or that can never be admitted go without a
  reservation. The fields of both hashes: throttle/fields.py.

  KEYS[1] state hash (admit.lua's; keeps QUEUED, WAKE_ON)  KEYS[2] leases zset
  KEYS[3] scheduler hash (the Q_ fields)  KEYS[4] payloads hash: id -> meta \30 payload
    (queued: lib/push.lua) or payload (released, not claimed yet)
  KEYS[5] releasing zset (id -> release ms)  KEYS[6] blocked zset (flow -> may go ms)
  KEYS[7] wake list
  ARGV[1] key prefix '<prefix>:{<group>}:' (flow lists fq:<flow>, zsets ready:<lane>,
    idle:<lane>)  ARGV[2] lanes 'name,credit rate;...', highest first
  ARGV[3] release lead ms  ARGV[4] most items to release  ARGV[5] keys' ttl ms
  ARGV[6] id of the item to push ('' for a pass only)
  ARGV[7] 'broker db,own db[,unacked hash,unacked index]' or '' (lib/release.lua)
  a push: ARGV[8] lane  ARGV[9] flow '<lane>|<tenant>'  ARGV[10] weight
    ARGV[11] meta 'cost,deadline ms,cost texts...'  ARGV[12] payload
    ARGV[13] packed spec (admit.lua's ARGV[3])  ARGV[14] other dimensions (Q_OTHERS)
    ARGV[15] tenant binding indices  ARGV[16] '1': statistics kept apart (Q_APART)
  Returns {now_us, due_us (-1: when woken), count, then 7 per released item: id,
    payload (ESC alone: published by this pass), slot_us, lease 1/0, record ('':
    no reservation), reason 'ok'/'expired'/'refused', 1 for the pushed item itself}
]]
--@include lib/common.lua
--@include lib/admission.lua
--@include lib/push.lua
--@include lib/lanes.lua

local state_key, leases_key, sched_key, payloads_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local releasing_key, blocked_key, wake_key = KEYS[5], KEYS[6], KEYS[7]
local prefix, lead, max_items, ttl = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local pushed = ARGV[6]
local now = server_now_ms()
local lanes, lane_of, fields = parse_lanes(ARGV[2], prefix)
local counters = rcall('HMGET', sched_key, unpack(fields))
-- Housekeeping (dropping idle flows' old finish tags, sweeping full tenant buckets)
-- runs at most once per CHORES_MS, and on every pass while a sweep is part way.
local CHORES_MS = 1000
local sweep_cursor = counters[6] or '0'
local chores_due = now - (tonumber(counters[7]) or -CHORES_MS) >= CHORES_MS
local ready_n, all_n = tonumber(counters[1]) or 0, tonumber(counters[2]) or 0
local expiry, last_due = tonumber(counters[3]) or 0, tonumber(counters[4]) or -1
local saturated, wake_on_before = counters[5] == '1', counters[8] or ''
-- when the soonest blocked flow may go again, ms (0: none blocked; nil: not known)
local blocked_soonest = tonumber(counters[9])
local b_before = ready_n
-- the counters as read, to write back only those that change
local read = {[F_Q_READY] = ready_n, [F_Q_ITEMS] = all_n, [F_Q_EXPIRY] = expiry,
              [F_Q_DUE] = last_due, [F_Q_SATURATED] = saturated and 1 or 0,
              [F_Q_SWEEP] = sweep_cursor, [F_Q_WAKE_ON] = wake_on_before,
              [F_Q_BLOCKED_SOONEST] = blocked_soonest}
--@include lib/flows.lua

-- The push. An item pushed while its payload is stored (queued, or released and not
-- claimed yet), its message delivered again because the worker that pushed it died
-- before acknowledging it, stays where it is.
if pushed ~= '' then
  local lane = lanes[lane_of[ARGV[8]]]
  if not lane then return redis.error_reply('ERR unknown lane ' .. ARGV[8]) end
  if rcall('HSETNX', payloads_key, pushed, stored_item(now)) == 1 then
    --@include lib/phase_push.lua
  end
  -- A push into a group saturated until a later time than the release lead reaches
  -- releases nothing: the pass would stop at the same limit. Only the counters change.
  if saturated and last_due > (now + lead) * 1000 then
    rcall('HSET', sched_key, F_Q_READY, ready_n, F_Q_ITEMS, all_n, F_Q_EXPIRY, expiry)
    if ready_n ~= b_before then mark_queued(state_key, ready_n, ttl) end
    keep_touched(expiry, now)
    return {math.floor(now * 1000), last_due, 0}
  end
end

-- The pass.
read_tags(lanes, counters)
local blocked_changed = false
--@include lib/phase_unblock.lua
-- (an idle tag at or below V is inert meanwhile: a flow starts at max(V, tag))
if chores_due then
  for _, lane in ipairs(lanes) do rcall('ZREMRANGEBYSCORE', lane.idle, '-inf', lane.v) end
end
local out, released, due = {math.floor(now * 1000), -1, 0}, 0, -1
saturated = false
local wake_on = ''  -- what saturated the group: the state field settle.lua wakes for
--@include lib/heads.lua
--@include lib/stats.lua
--@include lib/release.lua
--@include lib/phase_pass.lua
--@include lib/phase_write_back.lua
-- A push that brought the next pass forward wakes a dispatcher (one BLPOP takes it).
if pushed ~= '' and due >= 0 and (last_due < 0 or due < last_due) then
  rcall('LPUSH', wake_key, '1')
  rcall('LTRIM', wake_key, 0, 0)
end
return out
