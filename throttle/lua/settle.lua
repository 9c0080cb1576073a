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

  KEYS[1]    state hash of the group (its fields: throttle/fields.py)
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
  ARGV[2]    the group's spec (lib/spec.lua), as admit.lua's ARGV[3]
  ARGV[3..]  four per GCRA dimension: delta, observed remaining, observed limit,
             rounding of remaining (-1: unknown)
  then       one per other dimension: delta
  then       the reservation's expiry (ms) and record, as admit.lua returned it
             (lib/record.lua)
  Returns {done (1 or 0), now_us, multiplier x 1e6}
]]
--@include lib/common.lua
--@include lib/spec.lua
--@include lib/spec_dims.lua
--@include lib/record.lua
--@include lib/rescale.lua
--@include lib/settle.lua

local state_key, marker_key, leases_key, parked_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local spec, g, o = decode_spec(ARGV[2])
local rest = decode_rest(ARGV[2], spec)
local now = server_now_ms()
local entries = record_entries(ARGV[#ARGV])
if not record_fits(entries, g, o) then return redis.error_reply(MALFORMED_RECORD) end
if not finish_once(marker_key, ARGV[#ARGV - 1], now) then return {0, math.floor(now * 1000), -1} end
-- One read of everything (then each GCRA bucket's TAT and learned capacity: head[5 +
-- 2i], head[6 + 2i]); the buckets' writes go out together after the loop below.
local head = rcall('HMGET', state_key, F_MULTIPLIER, F_DECREASED, F_INCREASED, F_QUEUED, F_EXPIRY,
                   F_WAKE_ON, unpack(spec, 5, 4 + 2 * g))
local multiplier, wake_on = tonumber(head[1]) or 1, head[6]
if wake_on == '' then wake_on = nil end  -- not known: every refund wakes
local _, _, auto_ceiling = spec_aimd(rest)
local writes, learned_of, changed, ceiling = {}, {}, {}, 1
-- The queue of reservations reaches as far as its binding bucket's TAT beyond that
-- bucket's tolerance: `reach` before and after a change of limits, `binding_changed`
-- whether the bucket that set it was one of those whose limit changed.
local reach, reach_after, binding_changed = 0, 0, false
-- Whether this settle lets queued work start sooner (a refund where it binds, a higher rate)
local earlier = false
local furthest = now  -- the latest TAT this settle leaves: the state must outlive it
for i = 1, g do
  local tat_field, learned_field, period, capacity, tolerance, auto = spec_gcra(spec, g, i)
  local at = 4 * i - 1  -- ARGV[at .. at + 3]: delta, remaining, limit, rounding
  local limit = tonumber(ARGV[at + 2])
  local tat, learned = tat_ms(head[5 + 2 * i]) or 0, tonumber(head[6 + 2 * i])
  local before = effective_capacity(capacity, auto, learned, multiplier)
  if limit > 0 and limit ~= learned then
    writes[#writes + 1], writes[#writes + 2] = learned_field, limit
    learned = limit
  end
  learned_of[i] = learned
  if auto and not learned then ceiling = auto_ceiling end
  local effective = effective_capacity(capacity, auto, learned, multiplier)
  local after = tat
  local queued = math.max(0, tat - now - tolerance)
  if effective ~= before then  -- the provider's limit changed: rescale this bucket's queue
    after = rescaled_tat(tat, now, tolerance, before / effective)
    reach_after = math.max(reach_after, after - now - tolerance)
    changed[i] = true
  end
  if queued > reach then reach, binding_changed = queued, changed[i] == true end
  -- the delta at today's rate: a change since rescaled the queue to it
  after = settled_tat(after, now, period / effective, effective, tonumber(ARGV[at]),
                      tonumber(ARGV[at + 1]), tonumber(ARGV[at + 3]))
  if after ~= tat then writes[#writes + 1], writes[#writes + 2] = tat_field, tat_text(after) end
  if after < tat and (wake_on == nil or wake_on == tat_field) then earlier = true end
  furthest = math.max(furthest, after)
end
if #writes > 0 then rcall('HSET', state_key, unpack(writes)) end
local refunded = settle_others(state_key, ARGV[1], rest, g, o, entries, 2 + 4 * g, wake_on)
earlier = earlier or refunded
-- A bucket that did not bind (tokens while requests set the slots) changing its limit
-- does not move the parked tasks.
if not binding_changed then reach_after = math.max(reach_after, reach) end
furthest = follow_queue(state_key, parked_key, spec, g, now, reach, reach_after, changed, furthest)
local rose
multiplier, rose, furthest = raise_multiplier(state_key, parked_key, spec, rest, g, now, multiplier,
  ceiling, tonumber(head[2]), tonumber(head[3]), learned_of, furthest)
outlive(state_key, furthest, now, head[5])
local freed = rcall('ZREM', leases_key, ARGV[1]) == 1
if ((freed and (wake_on == nil or wake_on == F_LEASE)) or earlier or rose)
    and (tonumber(head[4]) or 0) > 0 then
  rcall('LPUSH', KEYS[#KEYS], '1')
  rcall('LTRIM', KEYS[#KEYS], 0, 0)
end
return {1, math.floor(now * 1000), math.floor(multiplier * 1e6)}
