--[[ admit: reserve one request's start slot over every dimension of a limit group.

  All or nothing: either every dimension is debited for the same slot, or none is.
  The slot is the earliest time, on this server's clock, at which every dimension can
  take the request's cost and the group is not paused. Reservations queue in arrival
  order: the next caller's slot comes after this one.

  KEYS[1]    state hash: 't:<dim>' GCRA TAT ms, 's:<dim>' sliding sum, 'pause' ms
  KEYS[2]    reservation record (JSON string), written when reserved
  KEYS[3]    concurrency leases zset: member reservation id, score lease expiry ms
  KEYS[3+i]  dimension i's own key: sliding-log zset or calendar hash (unused by gcra)
  ARGV[1]    reservation id
  ARGV[2]    max wait ms: reserve only a slot at most this far away; -1 for no bound
  ARGV[3]    record ttl ms, counted from the slot
  ARGV[4]    concurrency cap, 0 for none; a lease is taken only when the slot is now
  ARGV[5]    lease ttl ms
  ARGV[6]    n, the number of dimensions
  ARGV[7..]  five per dimension: name, algorithm, a, b, cost
               gcra     'g': a = emission interval ms per unit, b = burst tolerance ms
               sliding  's': a = capacity, b = window ms
               calendar 'c': a = capacity, b = comma-separated window starts ms, ascending
  Returns {code, wait_us, slot_ms, now_ms, lease, binding}
    code 0 reserved, 1 beyond max wait (nothing reserved), 2 cost above capacity of
    dimension `binding` (nothing reserved), 3 calendar starts do not cover now
    binding: index of the dimension that set the slot (0: none or the pause gate)
]]
--@include lib/common.lua
--@include lib/gcra.lua
--@include lib/sliding.lua
--@include lib/calendar.lua

local state_key, record_key, leases_key = KEYS[1], KEYS[2], KEYS[3]
local id, max_wait = ARGV[1], tonumber(ARGV[2])
local record_ttl, cap, lease_ttl = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local n = tonumber(ARGV[6])
local now = server_now_ms()

local dims, fields = {}, {'pause'}
for i = 1, n do
  local at = 7 + (i - 1) * 5
  local d = {name = ARGV[at], algo = ARGV[at + 1], cost = tonumber(ARGV[at + 4]), key = KEYS[3 + i]}
  if d.algo == 'g' then
    d.emission, d.tolerance = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
    if d.cost * d.emission > d.tolerance + 1e-6 then return {2, 0, '0', fmt_ms(now), 0, i} end
    fields[#fields + 1] = 't:' .. d.name
    d.field_at = #fields
  else
    d.capacity = tonumber(ARGV[at + 2])
    if d.cost > d.capacity then return {2, 0, '0', fmt_ms(now), 0, i} end
    if d.algo == 's' then
      d.window = tonumber(ARGV[at + 3])
      fields[#fields + 1] = 's:' .. d.name
      d.field_at = #fields
    else
      d.starts, d.fields = {}, {}
      for start in string.gmatch(ARGV[at + 3], '[^,]+') do
        d.fields[#d.fields + 1] = start
        d.starts[#d.starts + 1] = tonumber(start)
      end
      if now < d.starts[1] or now >= d.starts[#d.starts] then return {3, 0, '0', fmt_ms(now), 0, i} end
    end
  end
  dims[i] = d
end

local values = rcall('HMGET', state_key, unpack(fields))
local slot = math.max(now, tonumber(values[1] or '0'))
for _, d in ipairs(dims) do
  if d.algo == 'g' then d.tat = tonumber(values[d.field_at] or '0')
  elseif d.algo == 's' then d.sum = tonumber(values[d.field_at] or '0'); sliding_trim(d, state_key, now) end
end

-- Each dimension's earliest feasible time is non-decreasing in s: iterate to a fixed point.
local binding, settled = 0, false
for _ = 1, 32 do
  settled = true
  for i, d in ipairs(dims) do
    local e
    if d.algo == 'g' then e = gcra_earliest(d, slot)
    elseif d.algo == 's' then e = sliding_earliest(d, slot)
    else e = calendar_earliest(d, slot) end
    if e == nil then return {1, -1, '0', fmt_ms(now), 0, i} end
    if e > slot then slot, binding, settled = e, i, false end
  end
  if settled then break end
end
local wait = slot - now
if not settled or (max_wait >= 0 and wait > max_wait) then
  return {1, math.floor(wait * 1000), fmt_ms(slot), fmt_ms(now), 0, binding}
end

local hold = slot
local record = {s = fmt_ms(slot), d = {}}
for i, d in ipairs(dims) do
  if d.algo == 'g' then gcra_commit(d, state_key, slot)
  elseif d.algo == 's' then sliding_commit(d, state_key, slot, id); keep_for(d.key, slot + d.window - now + 1000)
  else calendar_commit(d, slot); keep_for(d.key, d.starts[#d.starts] - now + 1000) end
  if d.hold_ms and d.hold_ms > hold then hold = d.hold_ms end
  record.d[i] = {d.algo, d.cost, d.pre or false, d.post or false, d.emission or false, d.field or false}
end
keep_for(state_key, hold - now + 60000)

local lease = 0
if cap > 0 and wait <= 0 then
  rcall('ZREMRANGEBYSCORE', leases_key, '-inf', now)
  if rcall('ZCARD', leases_key) < cap then
    rcall('ZADD', leases_key, now + lease_ttl, id)
    keep_for(leases_key, lease_ttl + 1000)
    lease = 1
  end
end
rcall('SET', record_key, cjson.encode(record), 'PX', math.ceil(wait + record_ttl))
return {0, math.floor(wait * 1000), fmt_ms(slot), fmt_ms(now), lease, binding}
