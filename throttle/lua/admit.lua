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

  Nothing is stored per reservation: the reply carries the reservation's record, which
  the caller hands to cancel.lua or settle.lua. A GCRA-only group costs three commands:
  TIME, one HMGET and one HSET (plus a PEXPIRE when the state must live longer than
  the expiry 'x' last set, and the lease commands under a concurrency cap).

  KEYS[1]    state hash: 't:<dim>' GCRA TAT (whole µs), 'k:<dim>' learned capacity,
             's:<dim>' sliding sum, 'pause' ms, 'm' AIMD multiplier, 'x' the expiry
             ms this script last gave the hash
  KEYS[2]    concurrency leases zset: member reservation id, score lease expiry ms
  KEYS[2+j]  the j-th non-GCRA dimension's key: sliding-log zset or calendar hash
  ARGV[1]    reservation id
  ARGV[2]    max wait ms: reserve only a slot at most this far away; -1 for no bound
  ARGV[3]    the group's spec, the same for every call, packed once by the client
             (struct, little-endian; decoding it is far cheaper than parsing numbers):
               five doubles: concurrency cap (0 for none; a lease is taken only when
               the slot is now), lease ttl ms,
               g (the number of GCRA dimensions), o (the number of other dimensions),
               cold start (fraction of a GCRA bucket that is full when the group has
               no state yet: nothing heard from the provider, assume it is partly used);
               the struct format of the rest (a string);
               the hash fields to read, as zero-terminated strings: 'pause', 'm', 'x',
               then 't:<dim>', 'k:<dim>' per GCRA dimension;
               then four doubles per GCRA dimension: period ms, configured capacity
               (for an auto dimension: where it starts), burst tolerance ms (period x
               (1 - headroom)), auto (1 or 0)
  ARGV[4..]  g + o costs, one per dimension, GCRA dimensions first
  then       four per other dimension: name, algorithm, a, b
               sliding  's': a = capacity, b = window ms
               calendar 'c': a = capacity, b = comma-separated window starts ms, ascending
  Returns {code, wait_us, slot_us, now_us, lease, binding, record}
    code 0 reserved, 1 beyond max wait (nothing reserved), 2 cost above capacity of
    dimension `binding` (nothing reserved), 3 calendar starts do not cover now
    binding: 1-based index (GCRA dimensions first) of the dimension that set the
    slot; 0 for none or the pause gate
    record (code 0 only; lib/record.lua): 'multiplier as read' then 'cost,post
    TAT,learned capacity' per GCRA dimension (the raw strings: cancel.lua recomputes
    the emission interval this admission used, to undo it exactly), then 'cost,member'
    (sliding) or 'cost,window start' (calendar). Numbers are copied as the strings they
    came in wherever possible: turning a float into text is the dearest step here.
]]
--@include lib/common.lua

-- Sliding-log and calendar helpers, built only for a group that has such dimensions.
local function other_algorithms()
--@include lib/sliding.lua
--@include lib/calendar.lua
  return {
    s = {load = sliding_load, earliest = sliding_earliest, commit = sliding_commit},
    c = {load = calendar_load, earliest = calendar_earliest, commit = calendar_commit},
  }
end

local state_key, leases_key = KEYS[1], KEYS[2]
local id, max_wait = ARGV[1], tonumber(ARGV[2])
local cap, lease_ttl, g, o, cold, format, spec_at = struct.unpack('<ddddds', ARGV[3])
local spec = {struct.unpack(format, ARGV[3], spec_at)}
local now = server_now_ms()

-- spec[1 .. 3 + 2g]: the fields to read; spec[n + 1 .. n + 4], n = 3 + 2g + 4 (i - 1):
-- the i-th GCRA dimension's period, configured capacity, tolerance, auto
local values = rcall('HMGET', state_key, unpack(spec, 1, 3 + 2 * g))
local multiplier = tonumber(values[2]) or 1
local slot, binding = math.max(now, tonumber(values[1]) or 0), 0
local tats, emissions, costs = {}, {}, {}
for i = 1, g do
  local n = 2 * g + 4 * i - 1
  local tolerance = spec[n + 3]
  local learned = tonumber(values[2 * i + 3])
  local capacity = effective_capacity(spec[n + 2], spec[n + 4] == 1, learned, multiplier)
  local emission = spec[n + 1] / capacity
  local tat = tonumber(values[2 * i + 2])
  if tat then tat = tat / 1000 else tat = now + tolerance * (1 - cold) end
  local cost = tonumber(ARGV[3 + i])
  tats[i], emissions[i], costs[i] = tat, emission, cost
  -- A cost above a lowered capacity waits for a full bucket instead of never running.
  local earliest = tat + math.min(cost * emission, tolerance) - tolerance
  if earliest > slot then slot, binding = earliest, i end
end

local others, algorithms = {}, nil
if o > 0 then
  algorithms = other_algorithms()
  local others_at = 3 + g + o  -- ARGV[3 + i]: the i-th dimension's cost
  for j = 1, o do
    local at = others_at + 4 * j - 3
    local d = {name = ARGV[at], algo = ARGV[at + 1], capacity = tonumber(ARGV[at + 2]),
               cost = tonumber(ARGV[3 + g + j]), key = KEYS[2 + j], now = now}
    if d.cost > d.capacity then return {2, 0, 0, 0, 0, g + j} end
    if d.algo == 's' then
      d.window = tonumber(ARGV[at + 3])
      algorithms.s.load(d, state_key, now)
    else
      algorithms.c.load(d, ARGV[at + 3])
      if now < tonumber(d.starts[1]) or now >= tonumber(d.starts[#d.starts]) then
        return {3, 0, 0, 0, 0, g + j}
      end
    end
    others[j] = d
  end
end
-- GCRA bounds are constants; the others only move the slot later: iterate to a fixed point.
local settled = true
for _ = 1, 32 do
  settled = true
  for j, d in ipairs(others) do
    local e = algorithms[d.algo].earliest(d, slot)
    if e == nil then return {1, -1, 0, math.floor(now * 1000), 0, g + j} end
    if e > slot then slot, binding, settled = e, g + j, false end
  end
  if settled then break end
end
local wait = slot - now
if not settled or (max_wait >= 0 and wait > max_wait) then
  return {1, math.floor(wait * 1000), math.floor(slot * 1000), math.floor(now * 1000), 0, binding}
end

local record, writes, hold = {values[2] or ''}, {}, slot
for i = 1, g do
  local cost = costs[i]
  local post = ''
  if cost > 0 then
    local exact = math.max(tats[i], slot) + cost * emissions[i]
    post = tat_text(exact)
    writes[#writes + 1] = spec[2 * i + 2]
    writes[#writes + 1] = post
    if exact > hold then hold = exact end
  end
  record[i + 1] = ARGV[3 + i] .. ',' .. post .. ',' .. (values[2 * i + 3] or '')
end
-- The state lives a minute past its furthest TAT and the end of every sliding window
-- whose sum it holds; 'x' saves a PTTL on every call.
for _, d in ipairs(others) do
  if d.algo == 's' and slot + d.window > hold then hold = slot + d.window end
end
local expiry = nil
if hold + 60000 > (tonumber(values[3]) or 0) then
  expiry = math.ceil(hold + 120000)
  writes[#writes + 1] = 'x'
  writes[#writes + 1] = expiry
end
if #writes > 0 then rcall('HSET', state_key, unpack(writes)) end
if expiry then rcall('PEXPIRE', state_key, expiry - math.floor(now)) end
for j, d in ipairs(others) do
  local where = ''
  if d.cost > 0 then
    if d.algo == 's' then
      where = algorithms.s.commit(d, state_key, slot, id)
    else
      where = algorithms.c.commit(d, slot)
    end
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
return {0, math.floor(wait * 1000), math.floor(slot * 1000), math.floor(now * 1000), lease, binding,
        table.concat(record, '|')}
