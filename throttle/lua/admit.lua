--[[ admit: reserve one request's start slot over every dimension of a limit group.

  All or nothing: either every dimension is debited for the same slot, or none is.
  The slot is the earliest time, on this server's clock, at which every dimension can
  take the request's cost and the group is not paused. Reservations queue in arrival
  order: the next caller's slot comes after this one. GCRA dimensions (continuous
  token buckets) come first and cost a few arithmetic steps; sliding-log and calendar
  dimensions follow and may move the slot later.

  A GCRA dimension runs at its effective capacity (lib/common.lua): the configured
  capacity, lowered to the limit learned from the provider's headers 'k:<dim>' (an
  auto dimension takes the learned limit even when higher), x the group's AIMD
  multiplier 'm' (settle.lua and pause.lua keep both); its emission interval is
  period / effective capacity.

  Nothing is stored per reservation: the reply carries the reservation's record, which
  the caller hands to cancel.lua or settle.lua. A GCRA-only group costs three commands:
  TIME, one HMGET and one HSET (plus a PEXPIRE when the state must live longer than
  the expiry 'x' last set, and the lease commands under a concurrency cap).

  KEYS[1]    state hash (its fields: throttle/fields.py): 't:<dim>' GCRA TAT (whole
             µs), 'k:<dim>' learned capacity, 's:<dim>' sliding sum, 'pause' ms, 'm'
             AIMD multiplier, 'x' the expiry ms this script last gave the hash, 'b'
             items waiting in the group's fair queue (written by the fair scheduler)
  KEYS[2]    concurrency leases zset: member reservation id, score lease expiry ms
  KEYS[2+j]  the j-th non-GCRA dimension's key: sliding-log zset or calendar hash
  ARGV[1]    reservation id
  ARGV[2]    max wait ms: reserve only a slot at most this far away, and only while
             nothing waits in the group's fair queue (code 4 otherwise); -1 for no
             bound. 'max wait ms:tenant wait ms' also refuses (code 1) a slot that a
             tenant's own dimension sets further away than the second bound: it
             would hold every group dimension's schedule back for one tenant
  ARGV[3]    the group's spec, the same for every call and every script, packed once
             by the client (lib/spec.lua): concurrency cap (0 for none; a lease is
             taken only when the slot is now), lease ttl ms, g (the number of GCRA
             dimensions), o (the number of others), cold start (fraction of a GCRA
             bucket that is full when the group has no state yet: nothing heard from
             the provider, assume it is partly used), the state fields to read, and
             per GCRA dimension its period, capacity, burst tolerance and auto flag
  ARGV[4..]  g + o costs, one per dimension, GCRA dimensions first
  then       four per other dimension: name, algorithm, a, b
               sliding  's': a = capacity, b = window ms (with its wire margin)
               calendar 'c': a = capacity, b = comma-separated window starts ms, ascending
  Returns {code, wait_us, slot_us, now_us, lease, binding, record}
    code 0 reserved, 1 beyond max wait (nothing reserved), 2 cost above capacity of
    dimension `binding` (nothing reserved), 3 calendar starts do not cover now,
    4 work waits in the fair queue (nothing reserved: join it), 5 (only for the fair
    scheduler, schedule.lua) no concurrency lease free
    binding: 1-based index (GCRA dimensions first) of the dimension that set the
    slot; 0 for none or the pause gate (for the fair scheduler, schedule.lua, code 1
    carries a seventh element: that dimension's state field 't:<dim>', 'o:<name>' for
    a sliding or calendar one, or 'pause')
    record (code 0 only; lib/record.lua): 'multiplier as read' then 'cost,post
    TAT,learned capacity' per GCRA dimension (the raw strings: cancel.lua recomputes
    the emission interval this admission used, to undo it exactly), then 'cost,member'
    (sliding) or 'cost,window start' (calendar). Numbers are copied as the strings they
    came in wherever possible: turning a float into text is the dearest step here.
]]
--@include lib/common.lua
--@include lib/admission.lua

local max_wait = tonumber(string.match(ARGV[2], '^[^:]*'))
return admit_request(KEYS, ARGV, max_wait >= 0)
