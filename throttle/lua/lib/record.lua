-- Reading a reservation record written by admit.lua: 'slot|cost,detail|...', GCRA
-- dimensions first (detail = TAT right after the admission), then the others
-- (detail = sliding-log member or calendar window start).

local function record_entries(raw)
  local entries = {}
  for part in string.gmatch(raw, '[^|]+') do
    local cost, detail = string.match(part, '^([^,]*),(.*)$')
    entries[#entries + 1] = {tonumber(cost or part), detail}
  end
  table.remove(entries, 1)  -- the slot
  return entries
end
