--[[ settle: finish a reservation with the actual cost and what the provider said.

  Each dimension is adjusted by actual - reserved; each GCRA bucket is clamped to what
  the provider says remains and learns the limit it reports; the parked queue follows
  the buckets; a clean window raises the AIMD multiplier (lib/settle.lua says how).
  The lease is released.
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
local learned_of, changed, ceiling, reach, reach_after, binding_changed, earlier, furthest =
  settle_buckets(state_key, spec, rest, g, head, now, multiplier, wake_on)
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
