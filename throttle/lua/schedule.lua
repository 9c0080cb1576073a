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

local state_key, leases_key, sched_key, payloads_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local releasing_key, blocked_key, wake_key = KEYS[5], KEYS[6], KEYS[7]
local prefix, lead, max_items, ttl = ARGV[1], tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local pushed = ARGV[6]
local now = server_now_ms()
-- Keys written here that may have been created anew (a key whose last member went is
-- deleted, and one created again has no expiry): each gets the queue's expiry once.
local touched = {}
local function touch(key) touched[key] = true end
local function keep_touched(until_ms)
  for key in pairs(touched) do
    if rcall('PTTL', key) < 0 then rcall('PEXPIRE', key, math.max(1000, math.floor(until_ms - now))) end
  end
end

local function split(text, sep)
  local out, at = {}, 1
  while true do
    local i = string.find(text, sep, at, true)
    if not i then out[#out + 1] = string.sub(text, at); return out end
    out[#out + 1] = string.sub(text, at, i - 1)
    at = i + #sep
  end
end

-- (plain finds: a pattern with classes costs more than the rest of a push)
local lanes, lane_of = {}, {}
local fields = {'r', 'n', 'e', 'd', 's', 'z', 'y', 'g', 'k'}
local at, text = 1, ARGV[2]
while at <= #text do
  local comma = string.find(text, ',', at, true)
  local stop = (string.find(text, ';', comma, true) or #text + 1)
  local name = string.sub(text, at, comma - 1)
  lanes[#lanes + 1] = {name = name, rate = tonumber(string.sub(text, comma + 1, stop - 1)),
                       ready = prefix .. 'ready:' .. name, idle = prefix .. 'idle:' .. name}
  lane_of[name] = #lanes
  fields[#fields + 1], fields[#fields + 2] = 'v:' .. name, 'c:' .. name
  at = stop + 1
end
local counters = rcall('HMGET', sched_key, unpack(fields))
-- Housekeeping (dropping idle flows' old finish tags, sweeping full tenant buckets)
-- runs at most once per CHORES_MS, and on every pass while a sweep is part way.
local CHORES_MS = 1000
local sweep_cursor = counters[6] or '0'
local chores_due = now - (tonumber(counters[7]) or -CHORES_MS) >= CHORES_MS
local ready_n, all_n = tonumber(counters[1]) or 0, tonumber(counters[2]) or 0
local expiry, last_due = tonumber(counters[3]) or 0, tonumber(counters[4]) or -1
local saturated = counters[5] == '1'
local wake_on_before = counters[8] or ''
-- when the soonest blocked flow may go again, ms (0: none blocked; nil: not known)
local blocked_soonest = tonumber(counters[9])
local blocked_changed = false
local b_before = ready_n
-- the counters as read, to write back only those that change
local read = {r = ready_n, n = all_n, e = expiry, d = last_due, s = saturated and 1 or 0,
              z = sweep_cursor, g = wake_on_before, k = blocked_soonest}
-- The lanes' virtual times and credits, read when first needed (a push into a
-- saturated group needs neither, and a number read from text is a dear step here)
local tags_read = false
local function read_tags()
  if tags_read then return end
  tags_read = true
  for k, lane in ipairs(lanes) do
    lane.v, lane.credit = tonumber(counters[8 + 2 * k]) or 0, tonumber(counters[9 + 2 * k]) or 0
    lane.v_read, lane.credit_read = lane.v, lane.credit
  end
end

local function lane_of_flow(flow)
  return lanes[lane_of[string.sub(flow, 1, string.find(flow, '|', 1, true) - 1)]]
end

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

-- Statistics for the status (STATS): cost released and a histogram of waits (queued
-- to slot) per flow kept apart, per lane for all its other flows, and the group's
-- released cost, each decayed with a half-life of a minute. A 'q' field is
-- 'stamp ms,cost' then, for 'q:' fields, 'k:count' for each non-empty bucket k of
-- WAIT_BOUNDS_MS (k = #WAIT_BOUNDS_MS + 1 beyond the last). Read by the first release
-- of a pass, written with its other counters.
local HALF_LIFE_MS = 60000
local WAIT_BOUNDS_MS = {10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000}
local function decayed(text)
  local s = {cost = 0, waits = {}}
  if text then
    local parts = split(text, ',')
    local factor = math.min(1, math.pow(2, -(now - (tonumber(parts[1]) or now)) / HALF_LIFE_MS))
    s.cost = (tonumber(parts[2]) or 0) * factor
    for j = 3, #parts do
      local colon = string.find(parts[j], ':', 1, true)
      if colon then
        s.waits[tonumber(string.sub(parts[j], 1, colon - 1))] = tonumber(string.sub(parts[j], colon + 1)) * factor
      end
    end
  end
  return s
end
local function stats_text(s)
  local out = {string.format('%d,%.6g', now, s.cost)}
  for k = 1, #WAIT_BOUNDS_MS + 1 do
    local n = s.waits[k]
    if n and n >= 0.001 then out[#out + 1] = string.format('%d:%.4g', k, n) end
  end
  return table.concat(out, ',')
end

-- -- the push ----------------------------------------------------------------------
-- An item pushed while its payload is stored (queued, or released and not claimed
-- yet), its message delivered again because the worker that pushed it died before
-- acknowledging it, stays where it is. The item's meta is stored with its payload
-- ('<meta>\30<payload>'): one read and one delete when it goes.
local pushed_again = false
if pushed ~= '' then
  local lane = lanes[lane_of[ARGV[8]]]
  if not lane then return redis.error_reply('ERR unknown lane ' .. ARGV[8]) end
  pushed_again = rcall('HSETNX', payloads_key, pushed, stored_item(now)) == 0
end
if pushed ~= '' and not pushed_again then
  local lane, flow = lanes[lane_of[ARGV[8]]], ARGV[9]
  if all_n == 0 then touch(payloads_key) end  -- the first item since it emptied
  local flow_key = prefix .. 'fq:' .. flow
  local length = rcall('RPUSH', flow_key, pushed)
  -- a new list gets the queue's ttl; a long one has it renewed now and then (every
  -- item in it is younger than the ttl, which is longer than any deadline), and its
  -- settings too (a changed plan reaches a flow that never empties)
  local renew = length == 1 or length % 32 == 0
  if renew then rcall('PEXPIRE', flow_key, ttl) end
  local settings = flow_settings(flow)
  all_n = all_n + 1
  if length == 1 then
    read_tags()
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

-- -- the pass ----------------------------------------------------------------------
-- A push into a group saturated until a later time than the release lead reaches
-- releases nothing: the pass would stop at the same limit. Only the counters change.
if pushed ~= '' and saturated and last_due > (now + lead) * 1000 then
  rcall('HSET', sched_key, 'r', ready_n, 'n', all_n, 'e', expiry)
  if ready_n ~= b_before then mark_queued(state_key, ready_n, ttl) end
  keep_touched(expiry)
  return {math.floor(now * 1000), last_due, 0}
end
read_tags()
local unblocked = {}
if blocked_soonest == nil or (blocked_soonest > 0 and blocked_soonest <= now + lead) then
  unblocked = rcall('ZRANGEBYSCORE', blocked_key, '-inf', now + lead)
  blocked_changed = true
end
for _, flow in ipairs(unblocked) do
  rcall('ZREM', blocked_key, flow)
  local lane = lane_of_flow(flow)
  local length = rcall('LLEN', prefix .. 'fq:' .. flow)
  if lane and length > 0 then
    make_ready(lane, flow, tonumber(rcall('HGET', sched_key, 'f:' .. flow)) or lane.v)
    ready_n = ready_n + length
  end
end
-- (an idle tag at or below V is inert meanwhile: a flow starts at max(V, tag))
if chores_due then
  for _, lane in ipairs(lanes) do rcall('ZREMRANGEBYSCORE', lane.idle, '-inf', lane.v) end
end

local out, released, due = {math.floor(now * 1000), -1, 0}, 0, -1
saturated = false
local wake_on = ''  -- what saturated the group: the state field settle.lua wakes for

-- Messages to push onto the broker's queues (ARGV[7]): {key, text, unacked record}
-- each; the ids of the payloads that go. Both are written once, after the pass.
local broker = split(ARGV[7], ',')
local dbs = ARGV[7]
local outbox, gone = {}, {}
-- The end of a ready-made envelope (workers/message.py puts these properties last):
-- kombu's unacknowledged record needs its exchange, routing key and delivery tag
-- (read here only for a message stored by an older version without them).
local ENVELOPE_END = '"delivery_info": {"exchange": ("[^"]*"), "routing_key": ("[^"]*")}, ' ..
  '"priority": %d+, "body_encoding": "base64", "delivery_tag": "([^"]+)"}}$'
local function json_safe(text)
  if not string.find(text, '[%c"\\]') then return text end
  return (string.gsub(text, '[%c"\\]', function(c) return string.format('\\u%04x', string.byte(c)) end))
end

-- An item leaves the queue: its payload goes to the caller, or onto the broker.
local function emit(h, slot_us, lease, record, reason)
  local id, payload = h.id, h.payload
  local mine = id == pushed
  if h.legacy then rcall('HDEL', sched_key, 'm:' .. id) end  -- queued by an older version
  if mine then
    gone[#gone + 1] = id
  elseif dbs ~= '' and string.byte(payload, 1) == 27 then
    -- a ready-made message: publish it with its release written in, and record it as
    -- kombu records a message a worker takes (the release says so with a leading '+':
    -- the worker that takes it then records nothing itself, workers/transport.py)
    local key_end = string.find(payload, '\n', 2, true)
    local head_end = string.find(payload, '\n', key_end + 1, true)
    local tail = string.sub(payload, head_end + 1)
    local key, tag, suffix  -- the first line: key TAB tag TAB suffix (plain finds)
    local tab = string.find(payload, '\t', 2, true)
    local tab2 = tab and tab < key_end and string.find(payload, '\t', tab + 1, true)
    if tab2 and tab2 < key_end then
      key, tag, suffix = string.sub(payload, 2, tab - 1), string.sub(payload, tab + 1, tab2 - 1),
        string.sub(payload, tab2 + 1, key_end - 1)
    else  -- stored by an older version: the record's parts are in the envelope
      key = string.sub(payload, 2, key_end - 1)
      local exchange, routing_key
      exchange, routing_key, tag = string.match(string.sub(tail, -400), ENVELOPE_END)
      if tag then suffix = ', ' .. exchange .. ', ' .. routing_key .. ']' end
    end
    if not broker[4] then tag = nil end
    -- (only the id can hold what JSON escapes: the rest is numbers, words and commas)
    local release = string.format('%s%s,%d,%d,%d,%s,%s', tag and '+' or '', json_safe(id), slot_us,
                                  math.max(0, slot_us - math.floor(now * 1000)), lease, reason, record)
    local text = string.sub(payload, key_end + 1, head_end - 1) .. release .. tail
    local unacked = tag and {tag, '[' .. text .. suffix}
    outbox[#outbox + 1] = {key, text, unacked}
    gone[#gone + 1] = id
    payload = '\27'
  else
    -- published by the caller, claimed by the worker that receives it: the payload
    -- stays (without its meta) until then, for a release again if it goes stale
    rcall('HSET', payloads_key, id, payload)
    if rcall('ZADD', releasing_key, now, id) == 1 then touch(releasing_key) end
  end
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = id, payload, slot_us, lease
  out[n + 5], out[n + 6], out[n + 7] = record, reason, mine and 1 or 0
  released = released + 1
end

-- Per flow, read once per pass: its settings, and its next item id once known.
local flows = {}
local function settings(flow)
  local f = flows[flow]
  if not f then
    local got = rcall('HMGET', sched_key, 'p:' .. flow, 'o:' .. flow, 'w:' .. flow, 'i:' .. flow,
                      'a:' .. flow, 'q:' .. flow)
    f = {spec = got[1], others = got[2] or '', weight = tonumber(got[3]) or 1, tenant_at = got[4] or '',
         apart = got[5] == '1', stats_field = got[6]}
    flows[flow] = f
  end
  return f
end

-- STATS: one item of a flow released after waiting wait_ms.
local stats, group_stats, shared_texts = {}, nil, nil
local function record(lane, h, wait_ms)
  if not group_stats then  -- the group's, and every lane's '*'
    local names = {'q'}
    for _, l in ipairs(lanes) do names[#names + 1] = 'q:' .. l.name .. '|*' end
    shared_texts = rcall('HMGET', sched_key, unpack(names))
    group_stats = decayed(shared_texts[1])
  end
  local f = settings(h.flow)
  local key = f.apart and h.flow or (lane.name .. '|*')
  local s = stats[key]
  if not s then
    s = decayed(f.apart and f.stats_field or shared_texts[1 + lane_of[lane.name]])
    stats[key] = s
  end
  s.cost, group_stats.cost = s.cost + h.cost, group_stats.cost + h.cost
  local k = 1
  while WAIT_BOUNDS_MS[k] and wait_ms > WAIT_BOUNDS_MS[k] do k = k + 1 end
  s.waits[k] = (s.waits[k] or 0) + 1
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
    f.finish = finish  -- 'f:' written with the pass's counters
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
if released >= max_items then
  due = math.floor(now * 1000)  -- more may be ready at once
end
if blocked_changed then
  local soonest = rcall('ZRANGE', blocked_key, 0, 0, 'WITHSCORES')
  blocked_soonest = tonumber(soonest[2]) or 0
end
if due < 0 and blocked_soonest > 0 then due = math.floor(blocked_soonest * 1000) end
out[2], out[3] = due, released
for _, lane in ipairs(lanes) do flush_scores(lane) end
for _, q in pairs(queues) do trim(q) end
if #gone > 0 then rcall('HDEL', payloads_key, unpack(gone)) end
if #outbox > 0 then
  -- one LPUSH per queue (in release order), one HSET and one ZADD for kombu's records
  local unix_s = string.format('%.3f', (now + 1700000000000) / 1000)  -- kombu's time()
  local pushes, queues, records, index = {}, {}, {}, {}
  for _, message in ipairs(outbox) do
    local texts = pushes[message[1]]
    if not texts then
      texts = {}
      pushes[message[1]] = texts
      queues[#queues + 1] = message[1]
    end
    texts[#texts + 1] = message[2]
    local unacked = message[3]
    if unacked then
      records[#records + 1], records[#records + 2] = unacked[1], unacked[2]
      index[#index + 1], index[#index + 2] = unix_s, unacked[1]
    end
  end
  rcall('SELECT', tonumber(broker[1]))
  for _, key in ipairs(queues) do rcall('LPUSH', key, unpack(pushes[key])) end
  if #records > 0 then
    rcall('HSET', broker[3], unpack(records))
    rcall('ZADD', broker[4], unpack(index))
  end
  rcall('SELECT', tonumber(broker[2]))
end

if chores_due or sweep_cursor ~= '0' then
  local sweep = rcall('HSCAN', state_key, sweep_cursor, 'MATCH', F_TENANT_TAT .. '*', 'COUNT', 64)
  for j = 1, #sweep[2], 2 do
    local tat = tat_ms(sweep[2][j + 1])
    if tat and tat <= now then rcall('HDEL', state_key, sweep[2][j]) end
  end
  sweep_cursor = sweep[1]
end

-- Only what changed is written (all of it when the hash had expired)
local writes, anew = {}, expiry <= now
for field, value in pairs({r = ready_n, n = all_n, e = expiry, d = due, s = saturated and 1 or 0,
                           z = sweep_cursor, g = wake_on, k = blocked_soonest}) do
  if anew or value ~= read[field] then writes[#writes + 1], writes[#writes + 2] = field, value end
end
if chores_due then writes[#writes + 1], writes[#writes + 2] = 'y', math.floor(now) end
if group_stats then
  writes[#writes + 1], writes[#writes + 2] = 'q', stats_text(group_stats)
  for key, s in pairs(stats) do
    writes[#writes + 1], writes[#writes + 2] = 'q:' .. key, stats_text(s)
  end
end
for flow, f in pairs(flows) do
  if f.finish then writes[#writes + 1], writes[#writes + 2] = 'f:' .. flow, f.finish end
end
for _, lane in ipairs(lanes) do
  if anew or lane.v ~= lane.v_read then
    writes[#writes + 1], writes[#writes + 2] = 'v:' .. lane.name, lane.v
  end
  if anew or lane.credit ~= lane.credit_read then
    writes[#writes + 1], writes[#writes + 2] = 'c:' .. lane.name, lane.credit
  end
end
if #writes > 0 then rcall('HSET', sched_key, unpack(writes)) end
if anew then touch(sched_key) end  -- written anew since it expired
keep_touched(expiry > now and expiry or now + ttl)
if chores_due or ready_n ~= b_before or wake_on ~= wake_on_before then
  -- (written when it changes, and once a second in case the state hash expired)
  if ready_n > 0 then mark_queued(state_key, ready_n, ttl, wake_on) else rcall('HDEL', state_key, F_QUEUED, F_WAKE_ON) end
end
-- A push that brought the next pass forward wakes a dispatcher (one BLPOP takes it).
if pushed ~= '' and due >= 0 and (last_due < 0 or due < last_due) then
  rcall('LPUSH', wake_key, '1')
  rcall('LTRIM', wake_key, 0, 0)
end
return out
