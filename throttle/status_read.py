"""One read of the limit groups' state from Redis, uninterpreted: the state hash, the
server clock, counts of leases and parked tasks, and the fair queue's hash, zsets and
flow lengths (three round trips for every group). :mod:`throttle.status` makes sense
of it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import redis

from throttle import fields
from throttle.connect import RedisClient
from throttle.errors import StorageError
from throttle.keys import KeyBuilder
from throttle.spec import EPOCH_MS, as_text


@dataclass(frozen=True)
class RawGroupState:
    """One group's state as read from Redis, before interpretation."""

    #: The state hash, decoded to text.
    fields: Mapping[str, str]
    #: Server clock, ms since EPOCH_MS.
    now_ms: float
    #: Leases whose expiry is after now.
    in_flight: int
    #: Entries in the parked zset.
    parked: int
    #: Parked entries taken by a dispatcher and not yet acknowledged.
    releasing: int
    #: The fair queue: its hash, each lane's ready flows (flow -> start tag), the
    #: blocked flows (flow -> ms they may go again) and each listed flow's backlog.
    sched: Mapping[str, str] = field(default_factory=dict)
    ready: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    blocked: Mapping[str, float] = field(default_factory=dict)
    backlog: Mapping[str, int] = field(default_factory=dict)


def decode_fields(raw: Mapping[bytes | str, bytes | str]) -> dict[str, str]:
    """A hash as redis-py returns it (bytes or str) as text."""
    return {as_text(key): as_text(value) for key, value in raw.items()}


def server_now_ms(seconds: int, micros: int) -> float:
    """The reply of Redis TIME as ms since EPOCH_MS (the scripts' clock)."""
    return (int(seconds) * 1000 - EPOCH_MS) + int(micros) / 1000


def number(fields: Mapping[str, str], name: str) -> float | None:
    value = fields.get(name)
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None


def read_raw_states(
    client: RedisClient, keys: KeyBuilder, groups: Sequence[str], lanes: Sequence[str] = ()
) -> tuple[float, list[RawGroupState]]:
    """Server now (ms since EPOCH_MS) and every group's raw state: three round trips."""
    per_group = 6 + len(lanes)
    try:
        seconds, micros = cast(tuple[int, int], client.time())
        now_ms = server_now_ms(seconds, micros)
        pipe = client.pipeline(transaction=False)
        for name in groups:
            pipe.hgetall(keys.state(name))
            pipe.zcount(keys.leases(name), f"({now_ms!r}", "+inf")
            pipe.zcard(keys.parked(name))
            pipe.zcard(keys.releasing(name))
            pipe.hgetall(keys.scheduler(name))
            pipe.zrange(keys.blocked(name), 0, -1, withscores=True)
            for lane in lanes:
                pipe.zrange(f"{keys.group_prefix(name)}ready:{lane}", 0, -1, withscores=True)
        replies = pipe.execute()
        states = []
        for g, name in enumerate(groups):
            at = g * per_group
            ready = {
                lane: {as_text(f): float(v) for f, v in replies[at + 6 + k]}
                for k, lane in enumerate(lanes)
            }
            blocked = {as_text(f): float(v) for f, v in replies[at + 5]}
            flows = sorted({*blocked, *(f for r in ready.values() for f in r)})
            for flow in flows:
                pipe.llen(f"{keys.group_prefix(name)}fq:{flow}")
            backlog = dict(zip(flows, (int(n) for n in pipe.execute()), strict=True))
            states.append(
                RawGroupState(
                    fields=decode_fields(replies[at]),
                    now_ms=now_ms,
                    in_flight=int(replies[at + 1]),
                    parked=int(replies[at + 2]),
                    releasing=int(replies[at + 3]),
                    sched={  # its packed specs are binary: only the text fields matter
                        as_text(k): v.decode("utf-8", "replace") if isinstance(v, bytes) else v
                        for k, v in replies[at + 4].items()
                        if not as_text(k).startswith(fields.Q_SPEC)
                    },
                    ready=ready,
                    blocked=blocked,
                    backlog=backlog,
                )
            )
    except redis.RedisError as exc:
        raise StorageError(f"redis status read failed: {exc}") from exc
    return now_ms, states
