"""Every Redis key the project uses, built in one place.

Keys look like ``<prefix>:{<group>}:<what>``. The group name in braces is a Redis
Cluster hash tag, so all keys one script touches live in the same slot.
"""

from __future__ import annotations

import re

from throttle.errors import ConfigError

_PREFIX = re.compile(r"^[A-Za-z0-9_.:\-]+$")


class KeyBuilder:
    """Builds keys under a configurable prefix (default ``llmt``)."""

    def __init__(self, prefix: str = "llmt") -> None:
        if not _PREFIX.match(prefix):
            raise ConfigError(f"key prefix {prefix!r}: use letters, digits, _ . : -")
        self.prefix = prefix

    def _group(self, group: str) -> str:
        return f"{self.prefix}:{{{group}}}"

    def group_prefix(self, group: str) -> str:
        """What every key of a group starts with; the fair scheduler's script builds
        its per-flow and per-lane keys from it (``fq:<flow>``, ``ready:<lane>``,
        ``idle:<lane>``)."""
        return f"{self._group(group)}:"

    def state(self, group: str) -> str:
        """Hash: GCRA TATs, sliding sums, the pause gate, adaptive state."""
        return f"{self._group(group)}:state"

    def leases(self, group: str) -> str:
        """Zset of concurrency leases: member reservation id, score expiry ms."""
        return f"{self._group(group)}:leases"

    def finished(self, group: str, token: str) -> str:
        """String: set once a reservation is settled or cancelled, until its record expires;
        named by its handle's token (throttle.limiter)."""
        return f"{self._group(group)}:done:{token}"

    def dimension(self, group: str, dimension: str) -> str:
        """A dimension's own key: sliding-log zset or calendar-window hash."""
        return f"{self._group(group)}:dim:{dimension}"

    def parked(self, group: str) -> str:
        """Zset of tasks parked until their slot: member entry id, score slot ms."""
        return f"{self._group(group)}:parked"

    def parked_payloads(self, group: str) -> str:
        """Hash: parked entry id -> the JSON needed to publish the task again."""
        return f"{self._group(group)}:parked:payloads"

    def claimed(self, group: str, entry_id: str) -> str:
        """String: the release token of the message that claimed a released entry."""
        return f"{self._group(group)}:claimed:{entry_id}"

    def releasing(self, group: str) -> str:
        """Zset of parked entries taken for publishing: member entry id, score taken at ms."""
        return f"{self._group(group)}:releasing"

    def scheduler(self, group: str) -> str:
        """Hash: the fair scheduler's counters, tags, credits, flows and item metas."""
        return f"{self._group(group)}:sched"

    def blocked(self, group: str) -> str:
        """Zset of flows over their tenant's cap: member flow, score when it may go ms."""
        return f"{self._group(group)}:blocked"

    def wake(self, group: str) -> str:
        """List a push writes to when the next scheduling pass came forward."""
        return f"{self._group(group)}:wake"
