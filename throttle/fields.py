"""The fields of a limit group's state hash (:meth:`throttle.keys.KeyBuilder.state`)
and of its fair queue's scheduler hash (:meth:`~throttle.keys.KeyBuilder.scheduler`),
named once for Python and Lua.

Python code reads ``fields.PAUSE`` and so on. Lua code writes the same names with an
``F_`` prefix (``F_PAUSE``, ``F_TAT .. name``): the loader (``throttle/scripts.py``)
replaces each by its string literal from :data:`LUA_NAMES` as it assembles a script,
and refuses a name that is not there. Literals, not locals: a local that functions
capture costs every closure a search of the open upvalues, and the scripts make
dozens of closures per call (measured: 8% more instructions in an empty pass). To add
a field, add its constant here (``Q_`` first for the scheduler hash); every script sees
it at once.

Names ending in ``:`` are prefixes: the field is the prefix and a dimension's (a
lane's, a flow's) name.
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


# -- the fair queue's scheduler hash (KeyBuilder.scheduler; schedule.lua, enqueue.lua)
# Names start with ``Q_``; a flow is ``<lane>|<tenant>``.

#: Items in ready flows (the state's :data:`QUEUED` follows it).
Q_READY = "r"
#: Every queued item, ready or in a blocked flow.
Q_ITEMS = "n"
#: When the queue's keys expire, ms.
Q_EXPIRY = "e"
#: When the next pass is due as last told, µs (-1: when woken).
Q_DUE = "d"
#: 1 when that pass ended because the group itself was saturated (a group dimension,
#: the pause gate or the lease cap): a push before :data:`Q_DUE` then runs no pass.
Q_SATURATED = "s"
#: The :data:`WAKE_ON` that pass wrote.
Q_WAKE_ON = "g"
#: The cursor of the sweep of full tenant buckets in the state hash ('0': none under way).
Q_SWEEP = "z"
#: When the last chores (idle tags dropped, a sweep step) ran, ms.
Q_CHORES = "y"
#: When the soonest blocked flow may go again, ms (0: none blocked).
Q_BLOCKED_SOONEST = "k"
#: A lane's virtual time (``v:<lane>``).
Q_VIRTUAL_TIME = "v:"
#: A lower lane's credit (``c:<lane>``).
Q_CREDIT = "c:"
#: A flow's finish tag (``f:<flow>``).
Q_FINISH = "f:"
#: A flow's weight (``w:<flow>``).
Q_WEIGHT = "w:"
#: A flow's packed group spec (``p:<flow>``; throttle/spec.py), binary.
Q_SPEC = "p:"
#: A flow's other dimensions (``o:<flow>``): key and four admission args each, joined
#: by \31.
Q_OTHERS = "o:"
#: A flow's tenant dimensions' binding indices (``i:<flow>``, ',3,4,').
Q_TENANT_DIMS = "i:"
#: 1 when a flow's statistics are kept apart (``a:<flow>``), else they count in its
#: lane's ``*``. A flow's settings (weight to this) are written when it starts and with
#: every 32nd push.
Q_APART = "a:"
#: The group's release statistics ('stamp ms,cost,bucket:count...', decayed).
Q_STATS = "q"
#: A flow's kept apart (``q:<flow>``), or every other flow of a lane (``q:<lane>|*``).
Q_FLOW_STATS = "q:"


#: Every name above, by the name the Lua scripts write after ``F_``: the state hash's,
#: and the scheduler hash's (``Q_``).
LUA_NAMES: dict[str, str] = {
    name: value
    for name, value in dict(globals()).items()
    if name.isupper() and isinstance(value, str)
}


def lua_literal(name: str) -> str:
    """The Lua string literal that stands for ``F_<name>`` in a script."""
    return "'" + LUA_NAMES[name] + "'"
