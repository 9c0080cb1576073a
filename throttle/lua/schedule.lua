--[[ schedule: the fair scheduler of one limit group (docs/fair-scheduler.md).

  Queues one item (optional) and runs one scheduling pass: releases, in fair order,
  every queued item the group's limits can start within the release lead, each with
  its reservation made by the same admission as admit.lua (lib/admission.lua), all in
  this one atomic step on the server's clock. Nothing queued holds capacity, so a
  pause, a rate change or a cancel can never give two items the same capacity.

  Flows: one per (lane, tenant), a FIFO list of item ids. Between the flows of a lane,
  start-time fair queueing: a flow's head has start tag S = max(V, F) (V the lane's
  virtual time, F the flow's finish tag); the lowest S goes first; releasing it sets
  F = S + cost / weight and V = S. cost is the item's dominant share (the largest
  cost / capacity over the group's own dimensions). A flow that empties keeps its F in
  the lane's idle zset until V passes it: a tenant cannot earn credit by going idle.
  Lanes: strict priority, highest first, except that a lower lane earns credit
  (credit rate x cost of every release above it, capped at 1) while it has ready work,
  and goes first when its credit covers its head's cost.
  A flow whose own tenant dimension binds moves to the blocked zset until its slot and
  the pass goes on with the others; a group dimension, the pause gate or the lease cap
  binding ends the pass (the group is saturated) and tells when to run the next one.
  Items past their deadline, or that can never be admitted, are released without a
  reservation (the worker fails or re-admits them).

  KEYS[1]  state hash of the group (admit.lua's KEYS[1]); this script keeps its 'b' at
           the number of items in ready flows: above 0, it makes bounded admissions
           queue, and it is the queue's length a choice among credentials and the
           gateway's backpressure read; and its 'w' at what saturated the last pass
           (lib/push.lua's mark_queued): settle.lua's wake condition
  KEYS[2]  concurrency leases zset
  KEYS[3]  scheduler hash: 'r' ready items, 'n' all items, 'e' the keys' expiry ms,
           'z' the cursor of the sweep of idle tenants' buckets in KEYS[1],
           'd' the next pass's due time as last told (µs), 's' 1 when that pass ended
           because the group itself was saturated (a group dimension, the pause gate
           or the lease cap; a push before 'd' then runs no pass), 'g' the 'w' that
           pass wrote, 'y' when the last chores ran ms, 'k' when the soonest blocked
           flow may go again ms (0: none), 'v:<lane>' virtual time,
           'c:<lane>' credit; per flow 'f:<flow>' finish
           tag, 'w:<flow>' weight, 'p:<flow>' packed spec, 'o:<flow>' other dimensions
           (key and four admission args each, joined by \31), 'i:<flow>' the binding
           indices of tenant dimensions (',3,4,'), 'a:<flow>' 1 when its statistics are
           kept apart (the settings written when a flow starts and with every 32nd
           push); statistics (see STATS below): 'q' the group's,
           'q:<flow>' a flow kept apart, 'q:<lane>|*' every other flow of a lane
  KEYS[4]  payloads hash (shared with the parking lot): a queued item's id -> its meta
           'cost,deadline ms,queued at ms,cost texts...', then \30, then its payload;
           a released item waiting for its claim: id -> payload
  KEYS[5]  releasing zset: released item ids not yet claimed, score release time ms
  KEYS[6]  blocked zset: flows over their tenant cap, score when they may go again ms
  KEYS[7]  wake list (a push that leaves work queued wakes the dispatchers)
  ARGV[1]  prefix of the group's keys ('<prefix>:{<group>}:'): flow lists are
           <prefix>fq:<flow>, ready zsets <prefix>ready:<lane>, idle zsets
           <prefix>idle:<lane>
  ARGV[2]  lanes, highest priority first: 'name,credit rate;name,credit rate'
  ARGV[3]  release lead ms: release an item whose slot is at most this far away
  ARGV[4]  most items to release in this pass
  ARGV[5]  ttl ms of the queue's keys (longer than any item's deadline)
  ARGV[6]  id of the item to push, '' for a pass only
  ARGV[7]  'broker db,own db[,unacked hash,unacked index]' when the broker is a
           Redis on this server, else '': a payload that is a ready-made broker
           message (workers/message.py: ESC, queue key, TAB, delivery tag, TAB, the
           end of its unacknowledged record, LF, the envelope up to its open release
           header, LF, the rest) is pushed onto its queue by this pass
           (SELECT, LPUSH), with the release written into the header; it needs no
           claim and is not in KEYS[5]. Given the names of kombu's unacknowledged
           hash and index, the message is recorded there too, as kombu records a
           message a worker pops (that worker overwrites it; if it dies before,
           kombu restores the message after its visibility timeout)
  for a push:
  ARGV[8]  lane        ARGV[9]  flow ('<lane>|<tenant>')   ARGV[10] weight
  ARGV[11] item meta ('cost,deadline ms,cost texts...')    ARGV[12] payload
  ARGV[13] packed spec (admit.lua's ARGV[3])   ARGV[14] other dimensions (as 'o:')
  ARGV[15] tenant binding indices (as 'i:')
  ARGV[16] '1': keep this flow's statistics apart (a tenant with its own plan, or no
           tenant: a bounded set), '': count them in its lane's '*'
  Once a second (and on every pass while a sweep is part way) a pass also sweeps a
  few fields of the state hash (HSCAN, 64 at a time): a
  tenant's bucket that is full again is deleted, so ten thousand tenants seen once
  leave nothing behind while the group stays busy (a tenant seen again starts as a
  cold bucket, the group's cold_start full); an idle group's keys expire as a whole.
  A ready-made message's release is written as 'entry,slot_us,wait_us,lease,reason,
  record', with a leading '+' when the pass recorded it as unacknowledged.
  Returns {now_us, due_us, count, then 7 per released item: id, payload, slot_us,
    lease (1/0), record ('' when released without a reservation), reason, self}
    due_us: when the next pass should run (-1: when woken); reason: 'ok', 'expired',
    'refused'; self: 1 for the pushed item itself (not stored: its caller runs it);
    payload: ESC alone for a message this pass published
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
local read = {r = ready_n, n = all_n, e = expiry, d = last_due, s = saturated and 1 or 0,
              z = sweep_cursor, g = wake_on_before, k = blocked_soonest}
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
    rcall('HSET', sched_key, 'r', ready_n, 'n', all_n, 'e', expiry)
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
