-- The fair scheduler's lanes and the scheduler hash's counters (schedule.lua's
-- KEYS[3]), read once per pass. Needs only lib/common.lua.

-- `text` cut at every plain `sep`
local function split(text, sep)
  local out, at = {}, 1
  while true do
    local i = string.find(text, sep, at, true)
    if not i then out[#out + 1] = string.sub(text, at); return out end
    out[#out + 1] = string.sub(text, at, i - 1)
    at = i + #sep
  end
end

-- The lanes of ARGV[2] ('name,credit rate;...'), highest priority first, with the
-- index of each name, and the fields of the scheduler hash a pass reads: the counters
-- below, then each lane's virtual time and credit.
-- (plain finds: a pattern with classes costs more than the rest of a push)
local function parse_lanes(text, prefix)
  local lanes, lane_of = {}, {}
  local fields = {F_Q_READY, F_Q_ITEMS, F_Q_EXPIRY, F_Q_DUE, F_Q_SATURATED, F_Q_SWEEP,
                  F_Q_CHORES, F_Q_WAKE_ON, F_Q_BLOCKED_SOONEST}
  local at = 1
  while at <= #text do
    local comma = string.find(text, ',', at, true)
    local stop = (string.find(text, ';', comma, true) or #text + 1)
    local name = string.sub(text, at, comma - 1)
    lanes[#lanes + 1] = {name = name, rate = tonumber(string.sub(text, comma + 1, stop - 1)),
                         ready = prefix .. 'ready:' .. name, idle = prefix .. 'idle:' .. name}
    lane_of[name] = #lanes
    fields[#fields + 1], fields[#fields + 2] = F_Q_VIRTUAL_TIME .. name, F_Q_CREDIT .. name
    at = stop + 1
  end
  return lanes, lane_of, fields
end

-- The lanes' virtual times and credits, read when first needed (a push into a
-- saturated group needs neither, and a number read from text is a dear step here)
local function read_tags(lanes, values)
  if lanes.tags_read then return end
  lanes.tags_read = true
  for k, lane in ipairs(lanes) do
    lane.v, lane.credit = tonumber(values[8 + 2 * k]) or 0, tonumber(values[9 + 2 * k]) or 0
    lane.v_read, lane.credit_read = lane.v, lane.credit
  end
end

-- The lanes' tags that changed (all of them when `anew`), as HSET arguments.
local function tag_writes(lanes, writes, anew)
  for _, lane in ipairs(lanes) do
    if anew or lane.v ~= lane.v_read then
      writes[#writes + 1], writes[#writes + 2] = F_Q_VIRTUAL_TIME .. lane.name, lane.v
    end
    if anew or lane.credit ~= lane.credit_read then
      writes[#writes + 1], writes[#writes + 2] = F_Q_CREDIT .. lane.name, lane.credit
    end
  end
end

-- Keys written in a pass that may have been created anew (a key whose last member went
-- is deleted, and one created again has no expiry): each gets the queue's expiry once.
local touched = {}
local function touch(key) touched[key] = true end
local function keep_touched(until_ms, now)
  for key in pairs(touched) do
    if rcall('PTTL', key) < 0 then rcall('PEXPIRE', key, math.max(1000, math.floor(until_ms - now))) end
  end
end
