-- A limit group's spec: the same bytes for every script that takes one, packed once
-- by the client (throttle/spec.py packed_spec; a little-endian struct, far cheaper to
-- decode than numbers as text). Five doubles, then what an admission reads, then
-- what only settling, cancelling and pausing read (lib/spec_dims.lua decodes it).
-- decode_spec returns the admission's part as the array `s`:
--   s[1 .. 4 + 2g]  the state fields an admission reads, in one HMGET: F_PAUSE,
--                   F_MULTIPLIER, F_EXPIRY, F_QUEUED, then per GCRA dimension i its
--                   TAT field s[3 + 2i] (F_TAT .. name) and learned-capacity field
--                   s[4 + 2i] (F_LEARNED .. name)
--   s[n + 1 .. n + 4], n = 2g + 4i: GCRA dimension i's period ms, configured capacity
--                   (an auto dimension's start), burst tolerance ms (period x (1 -
--                   headroom)), auto (1 or 0)
--   s[#s]           where the rest starts
-- and the header: g (the number of GCRA dimensions), o (the number of others), the
-- concurrency cap (0: none), the lease ttl ms, the cold start (the fraction of a GCRA
-- bucket that is full when the group has no state yet).
local function decode_spec(packed)
  local cap, lease_ttl, g, o, cold, format, at = struct.unpack('<ddddds', packed)
  return {struct.unpack(format, packed, at)}, g, o, cap, lease_ttl, cold
end
