--[[ cancel: give a reservation back, as if it had never been admitted.

  Idempotent: a reservation already cancelled, settled or expired is left alone.
  A GCRA dimension that nobody touched since this admission is wound back exactly;
  otherwise its cost is refunded at the current time and the current rate (a change of
  rate since has rescaled the queue it sits in), never beyond a full bucket.

  KEYS[1]    state hash of the group (throttle/fields.py: 't:<dim>', 'k:<dim>', 'm')
  KEYS[2]    the reservation's finished marker (string)
  KEYS[3]    concurrency leases zset
  KEYS[4]    parked tasks zset
  KEYS[4+j]  the j-th non-GCRA dimension's key, as for admit.lua
  KEYS[#KEYS] the group's wake list: while items are ready in the fair queue, a cancel
             that gives back what saturated the last pass wakes a dispatcher (the
             condition of settle.lua)
  ARGV[1]    reservation id
  ARGV[2]    the group's spec (lib/spec.lua), as admit.lua's ARGV[3]
  ARGV[3]    the reservation's expiry (ms)
  ARGV[4]    its record, as admit.lua returned it (lib/record.lua)
  Returns {done (1 or 0), now_us}
]]
--@include lib/common.lua
--@include lib/spec.lua
--@include lib/spec_dims.lua
--@include lib/record.lua

local state_key, marker_key, leases_key = KEYS[1], KEYS[2], KEYS[3]
local spec, g, o = decode_spec(ARGV[2])
local rest = o > 0 and decode_rest(ARGV[2], spec)
local now = server_now_ms()
local entries, admitted_at = record_entries(ARGV[#ARGV])
if not record_fits(entries, g, o) then return redis.error_reply(MALFORMED_RECORD) end
if not finish_once(marker_key, ARGV[#ARGV - 1], now) then return {0, math.floor(now * 1000)} end
local head = rcall('HMGET', state_key, F_MULTIPLIER, F_QUEUED, F_WAKE_ON)
local multiplier, wake_on = tonumber(head[1]) or 1, head[3]
if wake_on == '' then wake_on = nil end  -- not known: every refund wakes
local earlier = false  -- whether queued work may start sooner
for i = 1, g do
  local cost, post = entries[i][1], entries[i][2]
  if cost > 0 then
    local field, learned_field, period, capacity, _, auto = spec_gcra(spec, g, i)
    local values = rcall('HMGET', state_key, field, learned_field)
    local stored = values[1]
    local tat = tat_ms(stored) or 0
    if stored == post then  -- untouched since: undo exactly what this admission added
      local emission = record_emission(entries[i], admitted_at, period, capacity, auto)
      rcall('HSET', state_key, field, tat_text(tat - cost * emission))
    else
      -- Admissions came after it, or the rate changed and rescaled the queue to the
      -- new rate: the cost goes back at today's rate.
      local emission = period / effective_capacity(capacity, auto, tonumber(values[2]), multiplier)
      rcall('HSET', state_key, field, tat_text(math.max(now, tat - cost * emission)))
    end
    if tat > now and (wake_on == nil or wake_on == field) then earlier = true end
  end
end
for j = 1, o do
  local name, algo = spec_other(rest, j)
  local cost, where, key = entries[g + j][1], entries[g + j][2], KEYS[4 + j]
  if cost > 0 then
    if algo == 's' then
      if rcall('ZREM', key, where) == 1 then
        rcall('HINCRBYFLOAT', state_key, F_SLIDING_SUM .. name, -cost)
        if wake_on == nil or wake_on == F_OTHER .. name then earlier = true end
      end
    elseif rcall('HEXISTS', key, where) == 1 then
      rcall('HINCRBYFLOAT', key, where, -cost)
      if wake_on == nil or wake_on == F_OTHER .. name then earlier = true end
    end
  end
end
local freed = rcall('ZREM', leases_key, ARGV[1]) == 1
if (earlier or (freed and (wake_on == nil or wake_on == F_LEASE))) and (tonumber(head[2]) or 0) > 0 then
  rcall('LPUSH', KEYS[#KEYS], '1')
  rcall('LTRIM', KEYS[#KEYS], 0, 0)
end
return {1, math.floor(now * 1000)}
