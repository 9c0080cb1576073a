"""Backpressure: a request whose expected start is further away than its caller
allows gets 429 with ``Retry-After`` instead of a place in the queue.

The expected start comes from one read of the group's state (``TIME`` and one
``HMGET``, pipelined; for a group with several credentials, one per credential in the
same pipeline, and the soonest counts, as the worker would choose): the buckets'
wait, plus the fair queue draining before it at the group's rate
(:class:`throttle.limiter.StartWait`), and no earlier than after what this process
queued itself and Redis does not show yet (a burst of callers all read the same
state before their tasks reach a worker). ``Retry-After`` is the time until that start
comes within the caller's wait; callers refused at the same moment are given
successive turns (each refusal is counted as one more request ahead of the next
refused one until its turn passes), so they do not all come back at once. The turns
are kept in this process's memory: several gateway processes each stagger their own.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from throttle.config import Config, GroupSettings
from throttle.errors import StorageError
from throttle.limiter import RedisLimiter, StartWait
from throttle.providers.tokens import TokenEstimator


def retry_after_s(start: StartWait, max_wait_s: float, turns_ahead: int) -> float:
    """Seconds after which a refused request may expect to start within ``max_wait_s``
    (``turns_ahead``: requests refused before it whose turn has not come)."""
    ahead_s = start.expected_s + turns_ahead * start.per_item_s
    return max(1.0, ahead_s - max_wait_s)


class Backpressure:
    """Decides, for one request, to queue it (None) or refuse it (its Retry-After)."""

    def __init__(
        self,
        config: Config,
        limiter: RedisLimiter,
        client: Any,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.limiter = limiter  # for its plans only: the read goes through ``client``
        self.client = client  # redis.asyncio
        self.estimator = TokenEstimator()
        self._clock = clock
        self._turns: dict[str, deque[float]] = {}
        self._sent_until: dict[str, float] = {}

    def costs(
        self,
        settings: GroupSettings,
        tenant: str | None,
        model: str,
        messages: Any,
        max_tokens: int,
        params: Mapping[str, Any],
    ) -> dict[str, float]:
        profile = self.config.providers[settings.provider].resolved_profile()
        estimate = self.estimator.estimate_messages(model, messages)
        reservation = profile.reserve(input_tokens=estimate, max_tokens=max_tokens, params=params)
        first = (settings.credentials or (None,))[0]
        group = self.config.limit_group(settings, tenant, first)
        return self.config.costs_for(settings, group, reservation.costs)

    async def start(
        self, settings: GroupSettings, tenant: str | None, costs: Mapping[str, float]
    ) -> tuple[str, StartWait, bool]:
        """The soonest start among the group's credentials (one round trip), and
        whether every credential's fair queue is empty."""
        groups = [
            self.config.limit_group(settings, tenant, credential)
            for credential in (settings.credentials or (None,))
        ]
        pipe = self.client.pipeline(transaction=False)
        pipe.time()
        for group in groups:
            key, fields = self.limiter.start_wait_read(group)
            pipe.hmget(key, fields)
        try:
            server_time, *values = await pipe.execute()
        except Exception as exc:  # redis.asyncio's errors, OSError
            raise StorageError(f"limiter Redis unreachable: {exc}") from exc
        starts = [
            (group.name, self.limiter.start_wait_from(group, costs, server_time, vals))
            for group, vals in zip(groups, values, strict=True)
        ]
        name, soonest = min(starts, key=lambda item: item[1].expected_s)
        return name, soonest, all(start.queued == 0 for _, start in starts)

    def refuse(self, group: str, start: StartWait, max_wait_s: float) -> float | None:
        """None when the request may queue (it is counted as ahead of the next ones);
        else the Retry-After (seconds) it gets."""
        now = self._clock()
        # What this process sent and Redis does not show yet (its tasks are on their
        # way through the broker): a start no earlier than after them.
        expected_s = max(start.expected_s, self._sent_until.get(group, now) - now)
        if expected_s <= max_wait_s:
            self._sent_until[group] = now + expected_s + start.per_item_s
            return None
        turns = self._turns.setdefault(group, deque())
        while turns and turns[0] <= now:
            turns.popleft()
        ahead = StartWait(expected_s, 0, start.per_item_s)
        wait_s = retry_after_s(ahead, max_wait_s, len(turns))
        turns.append(now + wait_s)
        if len(turns) > 1 and turns[-1] < turns[-2]:  # keep it sorted: a rare late one
            turns = self._turns[group] = deque(sorted(turns))
        return wait_s


def retry_headers(wait_s: float) -> dict[str, str]:
    """``retry-after`` in whole seconds and ``retry-after-ms`` (the OpenAI SDK reads it
    first)."""
    return {"retry-after": str(math.ceil(wait_s)), "retry-after-ms": str(math.ceil(wait_s * 1000))}
