-- A sliding-log entry moving to now as its request starts (begin.lua): the provider
-- counts a request in its rolling window from when it arrives.

-- How long (µs) the entry `member` of the log `key`, `cost` units, must wait before
-- the window ending now has room for it besides the others (oldest first: it waits
-- for the oldest to leave); nil when it fits now.
local function sliding_wait_us(key, member, cost, capacity, window, now)
  local live = rcall('ZRANGEBYSCORE', key, '(' .. (now - window), '+inf', 'WITHSCORES')
  local excess = -capacity + cost
  for k = 1, #live, 2 do
    if live[k] ~= member then excess = excess + tonumber(string.match(live[k], ':([^:]+)$')) end
  end
  local k = 1
  while excess > 0 and k <= #live do
    if live[k] ~= member then
      excess = excess - tonumber(string.match(live[k], ':([^:]+)$'))
      if excess <= 0 then return math.floor((tonumber(live[k + 1]) + window - now) * 1000) + 1 end
    end
    k = k + 2
  end
  if excess > 0 then return 1000 end  -- (cannot happen)
  return nil
end
