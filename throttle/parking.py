"""The leaky-bucket dispatch queue: tasks parked in Redis until just before their slot.

A task whose slot is far away is not kept in a worker (nor as an ETA message in worker
memory): its payload is stored here, ordered by slot, and its broker message is
acknowledged. A dispatcher takes due entries in slot order with one atomic script (so
any number of dispatchers never release one entry twice) and publishes them again; the
worker that receives one claims it, and only then is the entry forgotten.
Parked tasks keep their reservation, so they never compete for capacity twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import redis

from throttle.connect import RedisClient
from throttle.errors import StorageError
from throttle.keys import KeyBuilder
from throttle.scripts import Scripts
from throttle.spec import EPOCH_MS


@dataclass(frozen=True)
class Released:
    """Due entries taken by :meth:`ParkingLot.take_due`."""

    now_ms: float
    #: Slot of the earliest entry still parked, or None when none is left.
    next_slot_ms: float | None
    entries: tuple[tuple[str, dict[str, Any]], ...]


class ParkingLot:
    """Parked tasks of every limit group, in Redis."""

    def __init__(self, client: RedisClient, keys: KeyBuilder, scripts: Scripts | None = None):
        self.client = client
        self.keys = keys
        self._scripts = scripts or Scripts(client)

    def park(self, group: str, entry_id: str, slot_ms: float, payload: Mapping[str, Any]) -> None:
        """Store a task until its slot. ``entry_id`` names this park (unique per park)."""
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self.keys.parked_payloads(group), entry_id, json.dumps(payload))
            pipe.zadd(self.keys.parked(group), {entry_id: slot_ms - EPOCH_MS})
            pipe.execute()
        except redis.RedisError as exc:
            raise StorageError(f"redis park failed: {exc}") from exc

    def take_due(
        self, group: str, *, lead_s: float, limit: int = 100, stale_s: float = 30.0
    ) -> Released:
        """Take up to ``limit`` entries whose slot is within ``lead_s``, in slot order."""
        keys = [
            self.keys.parked(group),
            self.keys.parked_payloads(group),
            self.keys.releasing(group),
        ]
        try:
            reply = self._scripts.release(
                keys=keys, args=[int(lead_s * 1000), limit, int(stale_s * 1000)]
            )
        except redis.RedisError as exc:
            raise StorageError(f"redis release failed: {exc}") from exc
        now_us, next_slot_us = int(reply[0]), int(reply[1])
        pairs = reply[2:]
        entries = tuple((_text(pairs[i]), _payload(pairs[i + 1])) for i in range(0, len(pairs), 2))
        next_slot_ms = EPOCH_MS + next_slot_us / 1000 if next_slot_us >= 0 else None
        return Released(EPOCH_MS + now_us / 1000, next_slot_ms, entries)

    def claim(self, group: str, entry_id: str, token: str, *, marker_ttl_s: float) -> bool:
        """Called by the worker that received a released entry: may this copy run? The
        entry is forgotten by the first copy to arrive; the same message delivered
        again (its worker died running it) runs again, another release's copy does not
        (``throttle/lua/claim.lua``). ``marker_ttl_s`` must outlast the broker's
        visibility timeout."""
        keys = [
            self.keys.releasing(group),
            self.keys.parked(group),
            self.keys.parked_payloads(group),
            self.keys.claimed(group, entry_id),
        ]
        try:
            reply = self._scripts.claim(keys=keys, args=[entry_id, token, int(marker_ttl_s * 1000)])
        except redis.RedisError as exc:
            raise StorageError(f"redis claim failed: {exc}") from exc
        return bool(int(reply))

    def forget(self, group: str, entry_id: str) -> None:
        """Drop an entry that was published with nothing to claim (a ready-made message
        pushed as is): it is no longer released again."""
        try:
            with self.client.pipeline(transaction=True) as pipe:
                pipe.zrem(self.keys.releasing(group), entry_id)
                pipe.zrem(self.keys.parked(group), entry_id)
                pipe.hdel(self.keys.parked_payloads(group), entry_id)
                pipe.execute()
        except redis.RedisError as exc:
            raise StorageError(f"redis forget failed: {exc}") from exc

    def backlog(self, group: str) -> int:
        """Tasks parked in a group (not counting those being published)."""
        try:
            return int(cast(int, self.client.zcard(self.keys.parked(group))))
        except redis.RedisError as exc:
            raise StorageError(f"redis zcard failed: {exc}") from exc


#: A stored payload that is a ready-made broker message (workers/message.py) starts so.
MESSAGE_MARK = "\x1b"


def _payload(raw: bytes | str) -> dict[str, Any]:
    """A stored payload: JSON, or a ready-made message as ``{"message": text}``."""
    text = _text(raw)
    if text.startswith(MESSAGE_MARK):
        return {"message": text}
    return json.loads(text) if text else {}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
