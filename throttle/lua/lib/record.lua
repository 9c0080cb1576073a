-- Reading a reservation record written by admit.lua: 'slot|cost,detail...|...', GCRA
-- dimensions first (details: TAT right after the admission, emission ms per unit),
-- then the others (detail: sliding-log member or calendar window start).

local function record_entries(raw)
  local entries = {}
  for part in string.gmatch(raw, '[^|]+') do
    local entry = {}
    for piece in string.gmatch(part .. ',', '([^,]*),') do entry[#entry + 1] = piece end
    entry[1] = tonumber(entry[1]) or 0
    entries[#entries + 1] = entry
  end
  table.remove(entries, 1)  -- the slot
  return entries
end
