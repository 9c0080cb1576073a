--[[ settle: finish a reservation with the actual cost, and release its lease.

  Each dimension is adjusted by delta = actual - reserved, at the current time: a
  positive delta debits more (a bucket may go into debt: later slots wait it out), a
  negative one refunds, never beyond a full bucket. Idempotent: a reservation already
  settled, cancelled or expired is left alone.

  KEYS[1]    state hash of the group
  KEYS[2]    reservation record
  KEYS[3]    concurrency leases zset
  KEYS[3+j]  the j-th non-GCRA dimension's key, as for admit.lua
  ARGV[1]    reservation id
  ARGV[2]    g, the number of GCRA dimensions
  ARGV[3]    o, the number of other dimensions
  ARGV[4..]  three per GCRA dimension: field 't:<dim>', emission ms per unit, delta
  then       three per other dimension: name, algorithm ('s' or 'c'), delta
  Returns {done (1 or 0), now_us}
]]
--@include lib/common.lua
--@include lib/record.lua

local state_key, record_key, leases_key = KEYS[1], KEYS[2], KEYS[3]
local g, o = tonumber(ARGV[2]), tonumber(ARGV[3])
local now = server_now_ms()
local raw = rcall('GET', record_key)
if not raw then return {0, math.floor(now * 1000)} end
local entries = record_entries(raw)
for i = 1, g do
  local at = 1 + 3 * i
  local delta = tonumber(ARGV[at + 2])
  if delta ~= 0 then
    local tat = tonumber(rcall('HGET', state_key, ARGV[at]) or '0')
    local after = math.max(tat, now) + delta * ARGV[at + 1]
    if delta < 0 then after = math.max(after, now) end
    rcall('HSET', state_key, ARGV[at], after)
  end
end
for j = 1, o do
  local at = 1 + 3 * g + 3 * j
  local delta, key = tonumber(ARGV[at + 2]), KEYS[3 + j]
  local cost, where = entries[g + j][1], entries[g + j][2]
  if delta ~= 0 and cost > 0 then
    if ARGV[at + 1] == 's' then
      local score = rcall('ZSCORE', key, where)
      if score then
        local kept = math.max(0, cost + delta)
        rcall('ZREM', key, where)
        rcall('ZADD', key, score, ARGV[1] .. ':' .. kept)
        rcall('HINCRBYFLOAT', state_key, 's:' .. ARGV[at], kept - cost)
      end
    elseif rcall('HEXISTS', key, where) == 1 then
      rcall('HINCRBYFLOAT', key, where, math.max(delta, -cost))
    end
  end
end
rcall('ZREM', leases_key, ARGV[1])
rcall('DEL', record_key)
return {1, math.floor(now * 1000)}
