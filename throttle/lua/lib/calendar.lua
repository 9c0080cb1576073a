-- Fixed windows aligned to calendar boundaries (midnight in a time zone). The client
-- passes the window starts around now, computed with the zone's rules; the server's
-- clock picks the window. State: a hash of window start -> units used.

local function calendar_load(d, spec)
  d.starts = {}
  for start in string.gmatch(spec, '[^,]+') do d.starts[#d.starts + 1] = start end
end

local function calendar_window(d, s)
  for k = #d.starts - 1, 1, -1 do
    if tonumber(d.starts[k]) <= s then return k end
  end
  return nil
end

local function calendar_earliest(d, s)
  local k = calendar_window(d, s)
  if k == nil then return nil end
  while k < #d.starts do
    local used = tonumber(rcall('HGET', d.key, d.starts[k]) or '0')
    if used + d.cost <= d.capacity then return math.max(s, tonumber(d.starts[k])) end
    k = k + 1
  end
  return nil
end

local function calendar_commit(d, slot)
  local k = calendar_window(d, slot)
  for old = 1, k - 1 do rcall('HDEL', d.key, d.starts[old]) end
  rcall('HINCRBYFLOAT', d.key, d.starts[k], d.cost)
  keep_for(d.key, tonumber(d.starts[#d.starts]) - d.now + 1000)
  return d.starts[k]
end
