--[[ enqueue: queue one item behind a saturated group's backlog, without a pass.

  The common push of a deep backlog: the group's last pass ended because the group
  itself was saturated (the scheduler hash's 's'), until a time beyond the release
  lead ('d'), and the item's flow already holds work. A pass now would stop at the
  same limit, so this only appends the item and counts it: what schedule.lua does for
  such a push, with none of its pass (its lanes, tags and helpers cost more than the
  push itself). In every other case it changes nothing and answers 0: the caller
  runs schedule.lua with the same keys and arguments.

  KEYS, ARGV  schedule.lua's for a push (KEYS[1] state, KEYS[3] scheduler hash,
              KEYS[4] payloads, KEYS[6] blocked; ARGV[1] prefix, ARGV[3] release lead
              ms, ARGV[5] queue ttl ms, ARGV[6] item id, ARGV[9..16] the item)
  Returns {1, now_us, due_us}: queued (or queued already); due_us the next pass's
    due time as last told
    {0}: nothing done; run schedule.lua
]]
--@include lib/common.lua
--@include lib/push.lua

local state_key, sched_key, payloads_key, blocked_key = KEYS[1], KEYS[3], KEYS[4], KEYS[6]
local lead, ttl, id, flow = tonumber(ARGV[3]), tonumber(ARGV[5]), ARGV[6], ARGV[9]
local now = server_now_ms()
local counters = rcall('HMGET', sched_key, F_Q_SATURATED, F_Q_DUE, F_Q_EXPIRY, F_Q_READY, F_Q_ITEMS)
local due = tonumber(counters[2]) or -1
-- not saturated past the lead, or the keys' expiry is due for renewal: a whole push
if counters[1] ~= '1' or due <= (now + lead) * 1000 or now + ttl > (tonumber(counters[3]) or 0) + 60000 then
  return {0}
end
if rcall('HSETNX', payloads_key, id, stored_item(now)) == 0 then
  return {1, math.floor(now * 1000), due}  -- pushed again: it stays where it is
end
local length = rcall('RPUSHX', ARGV[1] .. 'fq:' .. flow, id)
if length == 0 then  -- a flow of its own: it becomes ready, with its tags (a whole push)
  rcall('HDEL', payloads_key, id)
  return {0}
end
if length % 32 == 0 then  -- as schedule.lua renews a long flow's ttl and settings
  rcall('PEXPIRE', ARGV[1] .. 'fq:' .. flow, ttl)
  rcall('HSET', sched_key, unpack(flow_settings(flow)))
end
local ready_n = tonumber(counters[4]) or 0
local writes = {F_Q_ITEMS, (tonumber(counters[5]) or 0) + 1}
if not rcall('ZSCORE', blocked_key, flow) then
  ready_n = ready_n + 1
  writes[3], writes[4] = F_Q_READY, ready_n
  mark_queued(state_key, ready_n, ttl)
end
rcall('HSET', sched_key, unpack(writes))
return {1, math.floor(now * 1000), due}
