--[[ cancel: give a reservation back, as if it had never been admitted.

  Idempotent: a reservation already cancelled, settled or expired is left alone.
  A GCRA dimension that nobody touched since this admission is restored exactly;
  otherwise its cost is refunded at the current time, never below a full bucket.

  KEYS[1]    state hash of the group
  KEYS[2]    reservation record
  KEYS[3]    concurrency leases zset
  KEYS[3+i]  dimension i's own key, as for admit.lua
  ARGV[1]    reservation id
  ARGV[2..]  dimension names, in the group's order
  Returns {done (1 or 0), now_ms}
]]
--@include lib/common.lua
--@include lib/record.lua

local state_key, record_key, leases_key = KEYS[1], KEYS[2], KEYS[3]
local now = server_now_ms()
local raw = rcall('GET', record_key)
if not raw then return {0, fmt_ms(now)} end
local record = cjson.decode(raw)
for i, entry in ipairs(record.d) do undo_dimension(state_key, KEYS[3 + i], ARGV[1 + i], entry, now) end
rcall('ZREM', leases_key, ARGV[1])
rcall('DEL', record_key)
return {1, fmt_ms(now)}
