-- A phase of schedule.lua, not functions: its statements run where the script
-- includes them (a function here would cost every call a closure over a dozen of the
-- script's locals, and it runs once). The push: the item ARGV[6], its payload stored
-- already, joins its flow ARGV[9] in `lane`; a flow that was empty becomes ready with
-- its finish tag; the queue's keys get their expiry renewed once they near it.
-- Reads and writes schedule.lua's locals (all_n, ready_n, expiry; the push's ARGV as
-- lib/push.lua reads them).
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
  rcall('HSET', sched_key, F_Q_FINISH .. flow, finish, unpack(settings))
  make_ready(lane, flow, finish)
  ready_n = ready_n + 1
else
  if renew then rcall('HSET', sched_key, unpack(settings)) end
  if not rcall('ZSCORE', blocked_key, flow) then ready_n = ready_n + 1 end
end
if now + ttl > expiry + 60000 then
  expiry = math.floor(now + ttl + 120000)
  rcall('HSET', sched_key, F_Q_EXPIRY, expiry)  -- also keeps the hash from emptying below
  local keys = {sched_key, payloads_key, releasing_key, blocked_key}
  for _, l in ipairs(lanes) do keys[#keys + 1] = l.ready; keys[#keys + 1] = l.idle end
  for _, key in ipairs(keys) do rcall('PEXPIRE', key, math.floor(expiry - now)) end
end
