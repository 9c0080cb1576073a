-- Reading a decoded spec (lib/spec.lua) by name, for settle.lua, cancel.lua and
-- pause.lua (admission reads the same positions inline: a call per dimension costs
-- it more than the arithmetic).

-- The rest of the spec after the admission's part `s`: the array `r` of the group's
-- AIMD (increase, clean window ms, ceiling, decrease, floor), then per other dimension
-- its name and algorithm ('s' sliding log, 'c' calendar).
local function decode_rest(packed, s)
  local format, at = struct.unpack('<s', packed, s[#s])
  return {struct.unpack(format, packed, at)}
end

-- GCRA dimension i: its TAT field, its learned-capacity field, period ms, configured
-- capacity, burst tolerance ms, auto (a boolean).
local function spec_gcra(s, g, i)
  local n = 2 * g + 4 * i
  return s[3 + 2 * i], s[4 + 2 * i], s[n + 1], s[n + 2], s[n + 3], s[n + 4] == 1
end

-- The AIMD: increase, clean window ms, ceiling, decrease, floor.
local function spec_aimd(r)
  return r[1], r[2], r[3], r[4], r[5]
end

-- Other dimension j: its name and algorithm.
local function spec_other(r, j)
  return r[4 + 2 * j], r[5 + 2 * j]
end
