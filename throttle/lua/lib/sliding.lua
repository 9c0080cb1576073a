-- Sliding-window log: each admission's cost leaves the window exactly `window` ms after
-- its start. Entries live in a zset (score = start ms, member = '<id>:<cost>'); the sum
-- of the live entries is field 's:<dimension>' of the state hash. Entries are appended
-- in start order, so a new start is never earlier than the newest entry.

local function sliding_trim(d, state_key, now)
  local cutoff = now - d.window
  local gone = rcall('ZRANGEBYSCORE', d.key, '-inf', fmt_ms(cutoff))
  if #gone > 0 then
    local freed = 0
    for _, member in ipairs(gone) do freed = freed + tonumber(string.match(member, ':([^:]+)$')) end
    rcall('ZREMRANGEBYSCORE', d.key, '-inf', fmt_ms(cutoff))
    d.sum = rcall('HINCRBYFLOAT', state_key, 's:' .. d.name, -freed) + 0
  end
  local newest = rcall('ZRANGE', d.key, -1, -1, 'WITHSCORES')
  d.newest = newest[2] and tonumber(newest[2]) or 0
end

local function sliding_earliest(d, s)
  local start = math.max(s, d.newest)
  local excess = d.sum + d.cost - d.capacity
  if excess <= 0 then return start end
  local offset = 0
  while true do
    local batch = rcall('ZRANGE', d.key, offset, offset + 63, 'WITHSCORES')
    if #batch == 0 then return start end
    for j = 1, #batch, 2 do
      excess = excess - tonumber(string.match(batch[j], ':([^:]+)$'))
      if excess <= 0 then return math.max(start, tonumber(batch[j + 1]) + d.window) end
    end
    offset = offset + 64
  end
end

local function sliding_commit(d, state_key, slot, id)
  if d.cost == 0 then return end
  d.field = id .. ':' .. d.cost
  rcall('ZADD', d.key, fmt_ms(slot), d.field)
  rcall('HINCRBYFLOAT', state_key, 's:' .. d.name, d.cost)
  d.hold_ms = slot + d.window
end
