--[[ admit: reserve one request's start slot over every dimension of a limit group.

  All or nothing: either every dimension is debited for the same slot, or none is.
  The slot is the earliest time, on this server's clock, at which every dimension can
  take the request's cost and the group is not paused. Reservations queue in arrival
  order: the next caller's slot comes after this one. GCRA dimensions (continuous
  token buckets) come first and cost a few arithmetic steps; sliding-log and calendar
  dimensions follow and may move the slot later.

  A GCRA dimension runs at its effective capacity (lib/common.lua): the configured
  capacity, lowered to the limit learned from the provider's headers 'k:<dim>' (an
  auto dimension takes the learned limit even when higher), x the group's AIMD
  multiplier 'm' (settle.lua and pause.lua keep both); its emission interval is
  period / effective capacity.

  KEYS[1]    state hash: 't:<dim>' GCRA TAT (whole µs), 'k:<dim>' learned capacity,
             's:<dim>' sliding sum, 'pause' ms, 'm' AIMD multiplier
  KEYS[2]    reservation record (string), written when reserved
  KEYS[3]    concurrency leases zset: member reservation id, score lease expiry ms
  KEYS[3+j]  the j-th non-GCRA dimension's key: sliding-log zset or calendar hash
  ARGV[1]    reservation id
  ARGV[2]    max wait ms: reserve only a slot at most this far away; -1 for no bound
  ARGV[3]    the group's spec, the same for every call, packed once by the client
             (struct, little-endian; decoding it is far cheaper than parsing numbers):
               six doubles: record ttl ms (counted from the slot), concurrency cap (0
               for none; a lease is taken only when the slot is now), lease ttl ms,
               g (the number of GCRA dimensions), o (the number of other dimensions),
               cold start (fraction of a GCRA bucket that is full when the group has
               no state yet: nothing heard from the provider, assume it is partly used)
               then per GCRA dimension: TAT field, learned-capacity field (zero-
               terminated strings), period ms, configured capacity (for an auto
               dimension: where it starts), burst tolerance ms (period x (1 -
               headroom)), auto (1 or 0) (doubles)
  ARGV[4..]  g + o costs, one per dimension, GCRA dimensions first
  then       four per other dimension: name, algorithm, a, b
               sliding  's': a = capacity, b = window ms
               calendar 'c': a = capacity, b = comma-separated window starts ms, ascending
  Returns {code, wait_us, slot_us, now_us, lease, binding}
    code 0 reserved, 1 beyond max wait (nothing reserved), 2 cost above capacity of
    dimension `binding` (nothing reserved), 3 calendar starts do not cover now
    binding: 1-based index (GCRA dimensions first) of the dimension that set the
    slot; 0 for none or the pause gate
  The record (lib/record.lua) holds the multiplier as read, then 'cost,post TAT,learned
  capacity' per GCRA dimension (the raw strings: cancel.lua recomputes the emission
  interval this admission used, to undo it exactly), then 'cost,member' (sliding) or
  'cost,window start' (calendar). Numbers are copied as the strings they came in
  wherever possible: turning a float into text is the dearest step of this script.
]]
--@include lib/common.lua
--@include lib/sliding.lua
--@include lib/calendar.lua

local state_key, record_key, leases_key = KEYS[1], KEYS[2], KEYS[3]
local id, max_wait = ARGV[1], tonumber(ARGV[2])
local record_ttl, cap, lease_ttl, g, o, cold, spec_at = struct.unpack('<dddddd', ARGV[3])
local spec = {struct.unpack('<' .. string.rep('ssdddd', g), ARGV[3], spec_at)}
local others_at = 3 + g + o  -- ARGV[3 + i]: the i-th dimension's cost
local now = server_now_ms()

-- spec[s + 1 .. s + 6], s = 6 (i - 1): the i-th GCRA dimension's TAT field, learned
-- capacity field, period, configured capacity, tolerance, auto
local fields = {'pause', 'm'}
for i = 1, g do fields[2 * i + 1], fields[2 * i + 2] = spec[6 * i - 5], spec[6 * i - 4] end
local values = rcall('HMGET', state_key, unpack(fields))
local multiplier = tonumber(values[2]) or 1
local slot, binding = math.max(now, tonumber(values[1]) or 0), 0
local tats, emissions = {}, {}
for i = 1, g do
  local s = 6 * (i - 1)
  local period, configured, tolerance, auto = spec[s + 3], spec[s + 4], spec[s + 5], spec[s + 6] == 1
  local emission = period / effective_capacity(configured, auto, tonumber(values[2 * i + 2]), multiplier)
  tats[i], emissions[i] = tat_ms(values[2 * i + 1]) or (now + tolerance * (1 - cold)), emission
  -- A cost above a lowered capacity waits for a full bucket instead of never running.
  local earliest = tats[i] + math.min(ARGV[3 + i] * emission, tolerance) - tolerance
  if earliest > slot then slot, binding = earliest, i end
end

local others = {}
for j = 1, o do
  local at = others_at + 4 * j - 3
  local d = {name = ARGV[at], algo = ARGV[at + 1], capacity = tonumber(ARGV[at + 2]),
             cost = tonumber(ARGV[3 + g + j]), key = KEYS[3 + j], now = now}
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

local record, writes, hold = {values[2] or ''}, {}, slot + 60000
for i = 1, g do
  local cost = ARGV[3 + i]
  local post = ''
  if tonumber(cost) > 0 then
    local exact = math.max(tats[i], slot) + cost * emissions[i]
    post = tat_text(exact)
    writes[#writes + 1] = fields[2 * i + 1]
    writes[#writes + 1] = post
    if exact + 60000 > hold then hold = exact + 60000 end
  end
  record[i + 1] = cost .. ',' .. post .. ',' .. (values[2 * i + 2] or '')
end
if #writes > 0 then rcall('HSET', state_key, unpack(writes)) end
keep_for(state_key, hold - now)
for j, d in ipairs(others) do
  local where = ''
  if d.cost > 0 then
    if d.algo == 's' then where = sliding_commit(d, state_key, slot, id) else where = calendar_commit(d, slot) end
  end
  record[g + j + 1] = ARGV[3 + g + j] .. ',' .. where
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
rcall('SET', record_key, table.concat(record, '|'), 'PX', string.format('%d', math.ceil(wait + record_ttl)))
return {0, math.floor(wait * 1000), math.floor(slot * 1000), math.floor(now * 1000), lease, binding}
