--[[ release: take parked tasks whose slot is near, in slot order, for re-publishing.

  Moves up to `max` entries due within `lead` ms from the parked zset to the releasing
  zset (score = now), returning their payloads. The caller publishes them; the worker
  that receives one claims it, dropping it from `releasing` (throttle/parking.py).
  Entries still there after `stale` ms (a dispatcher that crashed before publishing, a
  message lost with a killed worker) go back to the parked zset, so no parked task is
  ever lost.

  KEYS[1]  parked zset: member entry id (one per park), score slot ms (llmt epoch)
  KEYS[2]  payloads hash: entry id -> JSON payload
  KEYS[3]  releasing zset: member entry id, score release time ms
  ARGV[1]  lead ms
  ARGV[2]  max entries to take
  ARGV[3]  stale ms
  Returns {now_us, next_slot_us or -1, id1, payload1, id2, payload2, ...}
]]
--@include lib/common.lua

local parked, payloads, releasing = KEYS[1], KEYS[2], KEYS[3]
local lead, max, stale = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now = server_now_ms()

for _, id in ipairs(rcall('ZRANGEBYSCORE', releasing, '-inf', now - stale)) do
  rcall('ZREM', releasing, id)
  rcall('ZADD', parked, now, id)
end

local out = {math.floor(now * 1000), -1}
local due = rcall('ZRANGEBYSCORE', parked, '-inf', now + lead, 'WITHSCORES', 'LIMIT', 0, max)
for j = 1, #due, 2 do
  local id = due[j]
  rcall('ZREM', parked, id)
  rcall('ZADD', releasing, now, id)
  out[#out + 1] = id
  out[#out + 1] = rcall('HGET', payloads, id) or ''
end
local next_one = rcall('ZRANGE', parked, 0, 0, 'WITHSCORES')
if next_one[2] then out[2] = math.floor(tonumber(next_one[2]) * 1000) end
return out
