--[[ begin: at a reserved slot, check the pause gate, time the request's sliding-log
  entries from now, and take a concurrency lease.

  Called when admit.lua returned a slot in the future or no lease, and by a released
  task when it starts. A group paused after the reservation was made sends the caller
  back to admission.
  Sliding logs: the provider counts a request in its rolling window from when the
  request arrives, and a task may start later than its slot (it waited for a free
  worker thread). Each of its entries is therefore moved to now, if the window ending
  now has room for it; if not, the entry stays where it was and the caller waits
  until it fits (code 3). Admissions after this see the entry where it really is.

  KEYS[1]    state hash of the group (throttle/fields.py: 'pause', 'm', 's:<dim>')
  KEYS[2]    concurrency leases zset
  KEYS[2+j]  the j-th sliding log of this reservation (zset, as admit.lua's)
  ARGV[1]    reservation id
  ARGV[2]    concurrency cap, 0 for none
  ARGV[3]    lease ttl ms
  ARGV[4..]  five per sliding log: name, the entry's member, its cost, capacity,
             window ms (with its wire margin)
  Returns {code, wait_us, now_us}
    code 0 go (lease held if capped), 1 paused for wait_us more, 2 no lease free now,
    3 a sliding window has no room for this request before wait_us
]]
--@include lib/common.lua
--@include lib/sliding_start.lua

local state_key, leases_key, id = KEYS[1], KEYS[2], ARGV[1]
local cap, lease_ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = server_now_ms()
local gate = rcall('HMGET', state_key, F_PAUSE, F_MULTIPLIER)
local paused_until = tonumber(gate[1] or '0')
if paused_until > now then
  return {1, math.floor((paused_until - now) * 1000), math.floor(now * 1000)}
end

-- Sliding logs: first see that every entry fits at now, then move them all.
local multiplier = math.min(tonumber(gate[2]) or 1, 1)
local moves = {}
for j = 1, (#ARGV - 3) / 5 do
  local at = 3 + 5 * (j - 1)
  local key, name, member = KEYS[2 + j], ARGV[at + 1], ARGV[at + 2]
  local cost, window = tonumber(ARGV[at + 3]), tonumber(ARGV[at + 5])
  local capacity = tonumber(ARGV[at + 4]) * multiplier
  local held = rcall('ZSCORE', key, member)
  -- an entry at or after now stays; one gone already (the task starts more than a
  -- window after its slot) comes back, as the provider will count it
  if not held or tonumber(held) < now then
    local wait_us = sliding_wait_us(key, member, cost, capacity, window, now)
    if wait_us then return {3, wait_us, math.floor(now * 1000)} end
    moves[#moves + 1] = {key, member, name, window, cost, held}
  end
end
for _, move in ipairs(moves) do
  rcall('ZADD', move[1], now, move[2])
  if not move[6] then rcall('HINCRBYFLOAT', state_key, F_SLIDING_SUM .. move[3], move[5]) end
  keep_for(move[1], move[4] + 1000)
  keep_for(state_key, move[4] + 60000)  -- it holds the log's sum
end

if cap > 0 then
  rcall('ZREMRANGEBYSCORE', leases_key, '-inf', now)
  if not rcall('ZSCORE', leases_key, id) and rcall('ZCARD', leases_key) >= cap then
    return {2, 0, math.floor(now * 1000)}
  end
  rcall('ZADD', leases_key, now + lease_ttl, id)
  keep_for(leases_key, lease_ttl + 1000)
end
return {0, 0, math.floor(now * 1000)}
