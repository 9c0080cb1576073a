--[[ settle: finish a reservation with the actual cost, and release its lease.

  Each dimension is adjusted by delta = actual - reserved, at the current time: a
  positive delta debits more (a bucket may go into debt: later slots wait it out), a
  negative one refunds, never above a full bucket. Idempotent: a reservation already
  settled, cancelled or expired is left alone.

  KEYS[1]    state hash of the group
  KEYS[2]    reservation record
  KEYS[3]    concurrency leases zset
  KEYS[3+i]  dimension i's own key, as for admit.lua
  ARGV[1]    reservation id
  ARGV[2..]  pairs per dimension, in the group's order: name, delta
  Returns {done (1 or 0), now_ms}
]]
--@include lib/common.lua
--@include lib/record.lua

local state_key, record_key, leases_key = KEYS[1], KEYS[2], KEYS[3]
local now = server_now_ms()
local raw = rcall('GET', record_key)
if not raw then return {0, fmt_ms(now)} end
local record = cjson.decode(raw)
for i, entry in ipairs(record.d) do
  local name, delta = ARGV[2 * i], tonumber(ARGV[2 * i + 1])
  adjust_dimension(state_key, KEYS[3 + i], name, entry, delta, now)
end
rcall('ZREM', leases_key, ARGV[1])
rcall('DEL', record_key)
return {1, fmt_ms(now)}
