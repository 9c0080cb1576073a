"""The fields of a limit group's state hash (:meth:`throttle.keys.KeyBuilder.state`),
named once for Python and Lua.

Python code reads ``fields.PAUSE`` and so on. Lua code writes the same names with an
``F_`` prefix (``F_PAUSE``, ``F_TAT .. name``): the loader (``throttle/scripts.py``)
replaces each by its string literal from :data:`STATE_FIELDS` as it assembles a script,
and refuses a name that is not there. Literals, not locals: a local that functions
capture costs every closure a search of the open upvalues, and the scripts make
dozens of closures per call (measured: 8% more instructions in an empty pass). To add
a field, add it here and to :data:`STATE_FIELDS`; every script sees it at once.

Names ending in ``:`` are prefixes: the field is the prefix and a dimension's name.
Times are ms since :data:`throttle.spec.EPOCH_MS` on the Redis server's clock.
"""

from __future__ import annotations

#: Until when the group's gate is closed (pause.lua); admissions give no slot before.
PAUSE = "pause"
#: The AIMD multiplier of every dimension's capacity (1 when absent).
MULTIPLIER = "m"
#: The expiry admit.lua and settle.lua last gave the hash: a PTTL saved while far enough.
EXPIRY = "x"
#: Items waiting in ready flows of the group's fair queue (schedule.lua); above 0,
#: bounded admissions join the queue.
QUEUED = "b"
#: What saturated the fair scheduler's last pass: a dimension's field (``t:<dim>``,
#: ``o:<dim>``), :data:`LEASE` or :data:`PAUSE`; settle.lua wakes a dispatcher only for
#: a refund to that one.
WAKE_ON = "w"
#: When the multiplier last decreased (after a provider 429, pause.lua).
DECREASED = "d"
#: When the multiplier last increased, or an auto group's first clean window started.
INCREASED = "i"
#: The end of the last decrease's epoch: 429s before it decrease nothing more.
EPOCH_END = "q"
#: A GCRA dimension's theoretical arrival time, in whole µs.
TAT = "t:"
#: The capacity a GCRA dimension learned from the provider's headers.
LEARNED = "k:"
#: A sliding-log dimension's sum of live entries.
SLIDING_SUM = "s:"
#: Not a field: in :data:`WAKE_ON`, a sliding-log or calendar dimension.
OTHER = "o:"
#: Not a field: in :data:`WAKE_ON`, the concurrency cap.
LEASE = "lease"
#: A tenant's own dimensions are named ``tenant.<name>`` (their TATs are swept when full).
TENANT_TAT = TAT + "tenant."

#: Every name above, as the Lua scripts write it (``F_<name>``).
STATE_FIELDS: dict[str, str] = {
    "PAUSE": PAUSE,
    "MULTIPLIER": MULTIPLIER,
    "EXPIRY": EXPIRY,
    "QUEUED": QUEUED,
    "WAKE_ON": WAKE_ON,
    "DECREASED": DECREASED,
    "INCREASED": INCREASED,
    "EPOCH_END": EPOCH_END,
    "TAT": TAT,
    "LEARNED": LEARNED,
    "SLIDING_SUM": SLIDING_SUM,
    "OTHER": OTHER,
    "LEASE": LEASE,
    "TENANT_TAT": TENANT_TAT,
}


def lua_literal(name: str) -> str:
    """The Lua string literal that stands for ``F_<name>`` in a script."""
    return "'" + STATE_FIELDS[name] + "'"
