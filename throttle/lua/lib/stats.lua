-- The fair scheduler's statistics (STATS), for the status (throttle/status.py reads
-- them): cost released and a histogram of waits (queued to slot) per flow kept apart,
-- per lane for all its other flows, and the group's released cost, each decayed with
-- a half-life of a minute. A 'q' field is 'stamp ms,cost' then, for 'q:' fields,
-- 'k:count' for each non-empty bucket k of WAIT_BOUNDS_MS (k = #WAIT_BOUNDS_MS + 1
-- beyond the last). Read by the first release of a pass, written with its other
-- counters. For schedule.lua only, after lib/flows.lua: uses its now, sched_key,
-- lanes, lane_of, and settings and split.
local HALF_LIFE_MS = 60000
local WAIT_BOUNDS_MS = {10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000}
local function decayed(text)
  local s = {cost = 0, waits = {}}
  if text then
    local parts = split(text, ',')
    local factor = math.min(1, math.pow(2, -(now - (tonumber(parts[1]) or now)) / HALF_LIFE_MS))
    s.cost = (tonumber(parts[2]) or 0) * factor
    for j = 3, #parts do
      local colon = string.find(parts[j], ':', 1, true)
      if colon then
        s.waits[tonumber(string.sub(parts[j], 1, colon - 1))] = tonumber(string.sub(parts[j], colon + 1)) * factor
      end
    end
  end
  return s
end
local function stats_text(s)
  local out = {string.format('%d,%.6g', now, s.cost)}
  for k = 1, #WAIT_BOUNDS_MS + 1 do
    local n = s.waits[k]
    if n and n >= 0.001 then out[#out + 1] = string.format('%d:%.4g', k, n) end
  end
  return table.concat(out, ',')
end

-- STATS: one item of a flow released after waiting wait_ms.
local stats, group_stats, shared_texts = {}, nil, nil
local function record(lane, h, wait_ms)
  if not group_stats then  -- the group's, and every lane's '*'
    local names = {F_Q_STATS}
    for _, l in ipairs(lanes) do names[#names + 1] = F_Q_FLOW_STATS .. l.name .. '|*' end
    shared_texts = rcall('HMGET', sched_key, unpack(names))
    group_stats = decayed(shared_texts[1])
  end
  local f = settings(h.flow)
  local key = f.apart and h.flow or (lane.name .. '|*')
  local s = stats[key]
  if not s then
    s = decayed(f.apart and f.stats_field or shared_texts[1 + lane_of[lane.name]])
    stats[key] = s
  end
  s.cost, group_stats.cost = s.cost + h.cost, group_stats.cost + h.cost
  local k = 1
  while WAIT_BOUNDS_MS[k] and wait_ms > WAIT_BOUNDS_MS[k] do k = k + 1 end
  s.waits[k] = (s.waits[k] or 0) + 1
end

-- The statistics a pass changed, as HSET arguments.
local function stats_writes(writes)
  if group_stats then
    writes[#writes + 1], writes[#writes + 2] = F_Q_STATS, stats_text(group_stats)
    for key, s in pairs(stats) do
      writes[#writes + 1], writes[#writes + 2] = F_Q_FLOW_STATS .. key, stats_text(s)
    end
  end
end
