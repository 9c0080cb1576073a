-- Reading a reservation record written by admit.lua: 'multiplier|cost,detail...|...',
-- GCRA dimensions first (details: TAT right after the admission in whole µs, the
-- learned capacity then in force), then the others (detail: sliding-log member or
-- calendar window start). Empty strings stand for "none".

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

-- The emission interval (ms per unit) a GCRA entry was admitted at.
local function record_emission(entry, multiplier, period, capacity, auto)
  return period / effective_capacity(capacity, auto, tonumber(entry[3]), multiplier)
end
