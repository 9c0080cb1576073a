-- Reading a reservation record returned by admit.lua and handed back by the client:
-- 'multiplier|cost,detail...|...', GCRA dimensions first (details: TAT right after the
-- admission in whole µs, the learned capacity then in force), then the others (detail:
-- sliding-log member or calendar window start). Empty strings stand for "none".
-- A reservation is finished once: the script that finishes it sets its marker key
-- (SET NX) until the record's expiry (the slot plus the limiter's record ttl, added by
-- the client), and a finished or expired record changes nothing.

-- Returns the entries (entry[1] the cost as a number, the details as strings) and the
-- AIMD multiplier the admission ran at.
local function record_entries(raw)
  local entries = {}
  for part in string.gmatch(raw .. '|', '([^|]*)|') do
    local entry = {}
    for piece in string.gmatch(part .. ',', '([^,]*),') do entry[#entry + 1] = piece end
    entries[#entries + 1] = entry
  end
  local multiplier = tonumber(table.remove(entries, 1)[1]) or 1
  for _, entry in ipairs(entries) do entry[1] = tonumber(entry[1]) or 0 end
  return entries, multiplier
end

-- The error a malformed record gets, before anything is written (throttle/limiter.py
-- turns it into ReservationHandleError).
local MALFORMED_RECORD = 'malformed reservation record'

-- Whether a record has the shape of this group's: g GCRA entries of three pieces, then o
-- entries of two, each with a cost naming where it went.
local function record_fits(entries, g, o)
  if #entries ~= g + o then return false end
  for i = 1, g do
    if #entries[i] ~= 3 then return false end
  end
  for j = g + 1, g + o do
    local entry = entries[j]
    if #entry ~= 2 or (entry[1] > 0 and entry[2] == '') then return false end
  end
  return true
end

-- Marks the reservation finished; false if it already was, or its record has expired.
local function finish_once(marker_key, expiry, now)
  expiry = tonumber(expiry)
  if not expiry or expiry <= now then return false end
  return rcall('SET', marker_key, '1', 'NX', 'PX', math.ceil(expiry - now)) ~= false
end

-- The emission interval (ms per unit) a GCRA entry was admitted at.
local function record_emission(entry, multiplier, period, capacity, auto)
  return period / effective_capacity(capacity, auto, tonumber(entry[3]), multiplier)
end
