-- Sliding-window log: each admission's cost leaves the window exactly `window` ms after
-- its start. Entries live in a zset (score = start ms, member = '<id>:<cost>'); the sum
-- of the live entries is field 's:<dimension>' of the state hash. Entries are appended
-- in start order, so a new start is never earlier than the newest entry.

local function sliding_load(d, state_key, now)
  d.sum = tonumber(rcall('HGET', state_key, F_SLIDING_SUM .. d.name) or '0')
  local cutoff = now - d.window
  local gone = rcall('ZRANGEBYSCORE', d.key, '-inf', cutoff)
  if #gone > 0 then
    local freed = 0
    for _, member in ipairs(gone) do freed = freed + tonumber(string.match(member, ':([^:]+)$')) end
    rcall('ZREMRANGEBYSCORE', d.key, '-inf', cutoff)
    d.sum = tonumber(rcall('HINCRBYFLOAT', state_key, F_SLIDING_SUM .. d.name, -freed))
  end
  local newest = rcall('ZRANGE', d.key, -1, -1, 'WITHSCORES')
  d.newest = newest[2] and tonumber(newest[2]) or -1e15
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
  local member = id .. ':' .. d.cost
  rcall('ZADD', d.key, slot, member)
  rcall('HINCRBYFLOAT', state_key, F_SLIDING_SUM .. d.name, d.cost)
  keep_for(d.key, slot + d.window - d.now + 1000)
  return member
end
