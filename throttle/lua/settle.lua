--[[ settle: finish a reservation with the actual cost and what the provider said.

  Each dimension is adjusted by delta = actual - reserved, at the current time and
  rate: a positive delta debits more (a bucket may go into debt: later slots wait it
  out), a negative one refunds, never beyond a full bucket. Then, per GCRA dimension, the
  provider's rate-limit headers: a bucket fuller than the provider says it is
  ('remaining', plus half its rounding) is clamped down to it, and the limit it reports
  is learned ('k:<dim>'; admit.lua never runs above it nor above the configuration);
  a different limit, like a change of the multiplier, rescales that bucket's queue to
  the new rate (lib/rescale.lua). Parked tasks move only as far as the queue's reach
  does (the TAT of the bucket that sets the slots), so a bucket that does not bind
  learning a higher limit moves nothing; when the queue moves earlier, the other
  dimensions' TATs, which its slots had pushed along, move with it.
  Finally, a clean window (no 429 decrease or increase for `clean_window` ms) raises
  the group's AIMD multiplier 'm' (throttle.limits.raised_multiplier): by `increase`
  up to 1; in a group with auto dimensions that have not heard their limit, up to
  `ceiling`, doubling until the group's first decrease ('d'), then by the fraction
  `increase`. The queue follows each dimension's own change of rate. The lease is
  released.
  Idempotent: a reservation already settled, cancelled or expired is left alone.

  KEYS[1]    state hash of the group
  KEYS[2]    the reservation's finished marker (string)
  KEYS[3]    concurrency leases zset
  KEYS[4]    parked tasks zset
  KEYS[4+j]  the j-th non-GCRA dimension's key, as for admit.lua
  KEYS[#KEYS] the group's wake list: while items are ready in the fair queue ('b' >
             0), a settle that may bring the next pass forward wakes a dispatcher
             (schedule.lua): a higher rate; a freed lease or a refund, but only to
             what saturated the last pass (the state's 'w': 'lease', a dimension's
             field, or 'pause' for neither), or to anything when 'w' is not known
  ARGV[1]    reservation id
  ARGV[2]    g, the number of GCRA dimensions
  ARGV[3]    o, the number of other dimensions
  ARGV[4]    additive increase of the multiplier per clean window
  ARGV[5]    clean window ms
  ARGV[6]    ceiling of the multiplier for a group with auto dimensions (1 otherwise)
  ARGV[7..]  nine per GCRA dimension: name, period ms, configured capacity, auto (1 or
             0), delta, observed remaining, observed limit, rounding of remaining (-1:
             unknown), burst tolerance ms
  then       three per other dimension: name, algorithm ('s' or 'c'), delta
  then       the reservation's expiry (ms) and record, as admit.lua returned it
             (lib/record.lua)
  Returns {done (1 or 0), now_us, multiplier x 1e6}
]]
--@include lib/common.lua
--@include lib/record.lua
--@include lib/rescale.lua

local state_key, marker_key, leases_key = KEYS[1], KEYS[2], KEYS[3]
local g, o = tonumber(ARGV[2]), tonumber(ARGV[3])
local increase, clean_window, auto_ceiling = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local now = server_now_ms()
local entries = record_entries(ARGV[#ARGV])
if not record_fits(entries, g, o) then return redis.error_reply(MALFORMED_RECORD) end
if not finish_once(marker_key, ARGV[#ARGV - 1], now) then return {0, math.floor(now * 1000), -1} end
local furthest = now  -- the latest TAT this settle leaves: the state must outlive it
-- One read of everything: 'm', 'd', 'i', then 't:<dim>', 'k:<dim>' per GCRA dimension, 'b',
-- 'x', 'w'; the buckets' writes go out together after the loop below.
local fields = {F_MULTIPLIER, F_DECREASED, F_INCREASED}
for i = 1, g do
  local name = ARGV[-2 + 9 * i]
  fields[2 + 2 * i], fields[3 + 2 * i] = F_TAT .. name, F_LEARNED .. name
end
fields[4 + 2 * g], fields[5 + 2 * g], fields[6 + 2 * g] = F_QUEUED, F_EXPIRY, F_WAKE_ON
local head = rcall('HMGET', state_key, unpack(fields))
local wake_on = head[6 + 2 * g]
if wake_on == '' then wake_on = nil end
-- Whether a refund to the dimension with this state field can bring the next pass forward
local function wakes(field) return wake_on == nil or wake_on == field end
local writes = {}
local multiplier = tonumber(head[1]) or 1
local ceiling = 1
local learned_of, changed = {}, {}
-- The queue of reservations reaches as far as its binding bucket's TAT beyond that
-- bucket's tolerance: `reach` before and after a change of limits, `binding_changed`
-- whether the bucket that set it was one of those whose limit changed.
local reach, reach_after, binding_changed = 0, 0, false
-- Whether this settle lets queued work start sooner (a refund where it binds, a higher rate)
local earlier = false
for i = 1, g do
  local at = -2 + 9 * i
  local name, period, capacity = ARGV[at], tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2])
  local auto, delta = ARGV[at + 3] == '1', tonumber(ARGV[at + 4])
  local remaining, limit = tonumber(ARGV[at + 5]), tonumber(ARGV[at + 6])
  local tat, learned = tat_ms(head[2 + 2 * i]) or 0, tonumber(head[3 + 2 * i])
  local before = effective_capacity(capacity, auto, learned, multiplier)
  if limit > 0 and limit ~= learned then
    writes[#writes + 1], writes[#writes + 2] = F_LEARNED .. name, limit
    learned = limit
  end
  learned_of[i] = learned
  if auto and not learned then ceiling = auto_ceiling end
  local effective = effective_capacity(capacity, auto, learned, multiplier)
  local after, tolerance = tat, tonumber(ARGV[at + 8])
  local queued = math.max(0, tat - now - tolerance)
  if effective ~= before then  -- the provider's limit changed: rescale this bucket's queue
    after = rescaled_tat(tat, now, tolerance, before / effective)
    reach_after = math.max(reach_after, after - now - tolerance)
    changed[i] = true
  end
  if queued > reach then reach, binding_changed = queued, changed[i] == true end
  local emission = period / effective
  if delta ~= 0 then  -- at today's rate: a change since rescaled the queue to it
    after = math.max(after, now) + delta * emission
    if delta < 0 then after = math.max(after, now) end
  end
  if remaining >= 0 then
    local ceiling_units = remaining + math.max(0, tonumber(ARGV[at + 7])) / 2
    local level = effective - (after - now) / emission
    if level > ceiling_units then after = now + (effective - ceiling_units) * emission end
  end
  if after ~= tat then writes[#writes + 1], writes[#writes + 2] = F_TAT .. name, tat_text(after) end
  if after < tat and wakes(F_TAT .. name) then earlier = true end
  furthest = math.max(furthest, after)
end
if #writes > 0 then rcall('HSET', state_key, unpack(writes)) end
for j = 1, o do
  local at = 4 + 9 * g + 3 * j
  local delta, key = tonumber(ARGV[at + 2]), KEYS[4 + j]
  local cost, where = entries[g + j][1], entries[g + j][2]
  if delta ~= 0 and cost > 0 then
    if ARGV[at + 1] == 's' then
      local score = rcall('ZSCORE', key, where)
      if score then
        local kept = math.max(0, cost + delta)
        rcall('ZREM', key, where)
        rcall('ZADD', key, score, ARGV[1] .. ':' .. kept)
        rcall('HINCRBYFLOAT', state_key, F_SLIDING_SUM .. ARGV[at], kept - cost)
        if kept < cost and wakes(F_OTHER .. ARGV[at]) then earlier = true end
      end
    elseif rcall('HEXISTS', key, where) == 1 then
      rcall('HINCRBYFLOAT', key, where, math.max(delta, -cost))
    end
  end
end
-- Parked tasks move with the reach of the queue. A bucket that did not bind (tokens
-- while requests set the slots) changing its limit does not move them.
if not binding_changed then reach_after = math.max(reach_after, reach) end
local queue_factor = 1
if reach > 0 then queue_factor = math.max(0, reach_after) / reach end
if queue_factor ~= 1 then
  rescale_parked(KEYS[4], now, queue_factor)
  if queue_factor < 1 then
    -- The queue moved earlier: so do the other buckets' TATs, which the reservations'
    -- slots had pushed along (a start slot debits every dimension at that slot).
    for i = 1, g do
      local at = -2 + 9 * i
      if not changed[i] then
        local tat = rescale_tat(state_key, ARGV[at], now, ARGV[at + 8], queue_factor)
        furthest = math.max(furthest, tat)
      end
    end
  end
end
local last_decrease, last_increase = tonumber(head[2]), tonumber(head[3])
if multiplier < ceiling and not (last_decrease or last_increase) then
  rcall('HSET', state_key, F_INCREASED, now)  -- an auto group's first clean window starts now
elseif multiplier < ceiling then
  if now - math.max(last_decrease or 0, last_increase or 0) >= clean_window then
    local raised
    if ceiling <= 1 then
      raised = math.min(1, multiplier + increase)
    elseif last_decrease then
      raised = math.min(ceiling, multiplier * (1 + increase))
    else
      raised = math.min(ceiling, multiplier * 2)
    end
    rcall('HSET', state_key, F_MULTIPLIER, raised, F_INCREASED, now)
    earlier = true
    local queue = 0  -- the parked queue follows the dimension that speeds up least
    for i = 1, g do
      local at = -2 + 9 * i
      local capacity, auto = tonumber(ARGV[at + 2]), ARGV[at + 3] == '1'
      local factor = effective_capacity(capacity, auto, learned_of[i], multiplier)
        / effective_capacity(capacity, auto, learned_of[i], raised)
      if factor ~= 1 then
        furthest = math.max(furthest, rescale_tat(state_key, ARGV[at], now, ARGV[at + 8], factor))
      end
      queue = math.max(queue, factor)
    end
    if queue > 0 and queue ~= 1 then rescale_parked(KEYS[4], now, queue) end
    multiplier = raised
  end
end
-- The state lives a minute past its furthest TAT. 'x', the state's expiry as last set
-- (admit.lua keeps it), saves the PTTL while it is far enough; the expiry is only ever
-- extended here (a pause may have set it further than any TAT).
if furthest > now and furthest + 60000 > (tonumber(head[5 + 2 * g]) or 0) then
  local ttl = rcall('PTTL', state_key)
  if ttl ~= -2 then
    local expiry = now + ttl
    if ttl < 0 or expiry < furthest + 60000 then
      expiry = math.ceil(furthest + 120000)
      rcall('PEXPIRE', state_key, expiry - math.floor(now))
    end
    rcall('HSET', state_key, F_EXPIRY, math.floor(expiry))
  end
end
local freed = rcall('ZREM', leases_key, ARGV[1]) == 1
if ((freed and wakes(F_LEASE)) or earlier) and (tonumber(head[4 + 2 * g]) or 0) > 0 then
  rcall('LPUSH', KEYS[#KEYS], '1')
  rcall('LTRIM', KEYS[#KEYS], 0, 0)
end
return {1, math.floor(now * 1000), math.floor(multiplier * 1e6)}
