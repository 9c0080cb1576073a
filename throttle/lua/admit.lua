--[[ admit: reserve one request's start slot over every dimension of a limit group.

  All or nothing: either every dimension is debited for the same slot, or none is.
  The slot is the earliest time, on this server's clock, at which every dimension can
  take the request's cost and the group is not paused. Reservations queue in arrival
  order: the next caller's slot comes after this one. GCRA dimensions (continuous
  token buckets) come first and cost a few arithmetic steps; sliding-log and calendar
  dimensions follow and may move the slot later.

  A GCRA dimension runs at its effective capacity: min(configured, learned from the
  provider's headers 'k:<dim>') x the group's AIMD multiplier 'm' (settle.lua and
  pause.lua keep both); its emission interval is period / effective capacity.

  KEYS[1]    state hash: 't:<dim>' GCRA TAT ms, 'k:<dim>' learned capacity,
             's:<dim>' sliding sum, 'pause' ms, 'm' AIMD multiplier
  KEYS[2]    reservation record (string), written when reserved
  KEYS[3]    concurrency leases zset: member reservation id, score lease expiry ms
  KEYS[4]    parked tasks zset (settle.lua rescales it)
  KEYS[4+j]  the j-th non-GCRA dimension's key: sliding-log zset or calendar hash
  ARGV[1]    reservation id
  ARGV[2]    max wait ms: reserve only a slot at most this far away; -1 for no bound
  ARGV[3]    record ttl ms, counted from the slot
  ARGV[4]    concurrency cap, 0 for none; a lease is taken only when the slot is now
  ARGV[5]    lease ttl ms
  ARGV[6]    g, the number of GCRA dimensions
  ARGV[7]    o, the number of other dimensions
  ARGV[8]    cold start: fraction of a GCRA bucket that is full when the group has no
             state yet (nothing heard from the provider: assume it is partly used)
  ARGV[9..]  five per GCRA dimension: name, period ms, configured capacity,
             burst tolerance ms (period x (1 - headroom)), cost
  then       five per other dimension: name, algorithm, a, b, cost
               sliding  's': a = capacity, b = window ms
               calendar 'c': a = capacity, b = comma-separated window starts ms, ascending
  Returns {code, wait_us, slot_us, now_us, lease, binding}
    code 0 reserved, 1 beyond max wait (nothing reserved), 2 cost above capacity of
    dimension `binding` (nothing reserved), 3 calendar starts do not cover now
    binding: 1-based index (GCRA dimensions first) of the dimension that set the
    slot; 0 for none or the pause gate
  The record holds 'slot|cost,post TAT,emission|...' for GCRA dimensions, then
  'cost,member' (sliding) or 'cost,window start' (calendar), for cancel.lua and
  settle.lua.
]]
--@include lib/common.lua
--@include lib/sliding.lua
--@include lib/calendar.lua

local state_key, record_key, leases_key = KEYS[1], KEYS[2], KEYS[3]
local id, max_wait, record_ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cap, lease_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local g, o, cold = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local now = server_now_ms()

local fields = {'pause', 'm'}
for i = 1, g do
  local name = ARGV[4 + 5 * i]
  fields[2 * i + 1] = 't:' .. name
  fields[2 * i + 2] = 'k:' .. name
end
local values = rcall('HMGET', state_key, unpack(fields))
local multiplier = tonumber(values[2]) or 1
local slot, binding = math.max(now, tonumber(values[1]) or 0), 0
local tats, emissions = {}, {}
for i = 1, g do
  local at = 4 + 5 * i
  local capacity = tonumber(ARGV[at + 2])
  local learned = tonumber(values[2 * i + 2])
  if learned and learned < capacity then capacity = learned end
  local emission = ARGV[at + 1] / (capacity * multiplier)
  local tolerance = tonumber(ARGV[at + 3])
  tats[i], emissions[i] = tonumber(values[2 * i + 1]) or (now + tolerance * (1 - cold)), emission
  -- A cost above a lowered capacity waits for a full bucket instead of never running.
  local earliest = tats[i] + math.min(ARGV[at + 4] * emission, tolerance) - tolerance
  if earliest > slot then slot, binding = earliest, i end
end

local others = {}
for j = 1, o do
  local at = 9 + 5 * g + 5 * (j - 1)
  local d = {name = ARGV[at], algo = ARGV[at + 1], capacity = tonumber(ARGV[at + 2]),
             cost = tonumber(ARGV[at + 4]), key = KEYS[4 + j], now = now}
  if d.cost > d.capacity then return {2, 0, 0, 0, 0, g + j} end
  if d.algo == 's' then
    d.window = tonumber(ARGV[at + 3])
    sliding_load(d, state_key, now)
  else
    calendar_load(d, ARGV[at + 3])
    if now < tonumber(d.starts[1]) or now >= tonumber(d.starts[#d.starts]) then
      return {3, 0, 0, 0, 0, g + j}
    end
  end
  others[j] = d
end
-- GCRA bounds are constants; the others only move the slot later: iterate to a fixed point.
local settled = true
for _ = 1, 32 do
  settled = true
  for j, d in ipairs(others) do
    local e
    if d.algo == 's' then e = sliding_earliest(d, slot) else e = calendar_earliest(d, slot) end
    if e == nil then return {1, -1, 0, math.floor(now * 1000), 0, g + j} end
    if e > slot then slot, binding, settled = e, g + j, false end
  end
  if settled then break end
end
local wait = slot - now
if not settled or (max_wait >= 0 and wait > max_wait) then
  return {1, math.floor(wait * 1000), math.floor(slot * 1000), math.floor(now * 1000), 0, binding}
end

local record, writes, hold = {slot}, {}, slot + 60000
for i = 1, g do
  local cost = tonumber(ARGV[8 + 5 * i])
  if cost > 0 then
    local post = math.max(tats[i], slot) + cost * emissions[i]
    writes[#writes + 1] = fields[2 * i + 1]
    writes[#writes + 1] = post
    record[i + 1] = cost .. ',' .. post .. ',' .. emissions[i]
    if post + 60000 > hold then hold = post + 60000 end
  else
    record[i + 1] = '0,,'
  end
end
if #writes > 0 then rcall('HSET', state_key, unpack(writes)) end
keep_for(state_key, hold - now)
for j, d in ipairs(others) do
  local where = ''
  if d.cost > 0 then
    if d.algo == 's' then where = sliding_commit(d, state_key, slot, id) else where = calendar_commit(d, slot) end
  end
  record[g + j + 1] = d.cost .. ',' .. where
end

local lease = 0
if cap > 0 and wait <= 0 then
  rcall('ZREMRANGEBYSCORE', leases_key, '-inf', now)
  if rcall('ZCARD', leases_key) < cap then
    rcall('ZADD', leases_key, now + lease_ttl, id)
    keep_for(leases_key, lease_ttl + 1000)
    lease = 1
  end
end
rcall('SET', record_key, table.concat(record, '|'), 'PX', math.ceil(wait + record_ttl))
return {0, math.floor(wait * 1000), math.floor(slot * 1000), math.floor(now * 1000), lease, binding}
