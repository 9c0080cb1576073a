"""Counters the emulator keeps about its clients (``GET /__emu/stats``).

* admitted requests and admitted cost per pool and dimension;
* refusals by reason (``rate_limit:<dim>``, ``too_large:<dim>``, ``fault:<kind>``);
* early retries: a request that comes back before the retry-after it was given
  elapsed. A request names itself with ``x-client-request-id``; one that does not is
  judged by its api key (Dev Proxy's RetryAfterPlugin notion). Arrivals on a key
  while any retry-after given to that key runs are counted apart, as
  ``arrivals_during_retry_after`` (requests already on the wire land there too);
* the ``x-stainless-retry-count`` values seen;
* the peak cost debited within any window of the dimension's length.

Times are emulator seconds.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


def peak_window_sum(debits: Sequence[tuple[float, float]], window_s: float) -> float:
    """Largest total ``amount`` in any half-open window ``[t, t + window_s)``.

    ``debits`` are ``(at_s, amount)`` in time order. Windows start at a debit, since a
    window that starts between debits holds no more than one starting at the next.

    >>> peak_window_sum([(0.0, 5.0), (0.5, 5.0), (1.0, 5.0), (1.2, 5.0)], 1.0)
    15.0
    """
    best = 0.0
    total = 0.0
    end = 0
    count = len(debits)
    for start in range(count):
        horizon_s = debits[start][0] + window_s
        while end < count and debits[end][0] < horizon_s:
            total += debits[end][1]
            end += 1
        best = max(best, total)
        total -= debits[start][1]
    return best


@dataclass
class KeyStats:
    admitted: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    early_retries: int = 0


@dataclass
class Stats:
    """Mutable counters; the engine calls the ``on_*`` methods under its lock."""

    started_s: float
    requests: int = 0
    admitted: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    early_retries: int = 0
    arrivals_during_retry_after: int = 0
    #: Streamed answers begun and sent to their end (the difference is open now).
    streams_started: int = 0
    streams_finished: int = 0
    stainless_retry_count: Counter[str] = field(default_factory=Counter)
    keys: defaultdict[str, KeyStats] = field(default_factory=lambda: defaultdict(KeyStats))
    #: (pool label, dimension) -> [(at_s, amount)], every debit in time order.
    debits: defaultdict[tuple[str, str], list[tuple[float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    #: api key -> emulator time before which a new request is an early retry.
    retry_not_before_s: dict[str, float] = field(default_factory=dict)
    #: x-client-request-id -> emulator time before which that request is early.
    request_not_before_s: dict[str, float] = field(default_factory=dict)

    def on_arrival(
        self,
        api_key: str,
        now_s: float,
        stainless: str | None,
        client_request_id: str | None = None,
    ) -> bool:
        """Count a request; returns True when it is an early retry."""
        self.requests += 1
        if stainless is not None:
            self.stainless_retry_count[stainless] += 1
        key_not_before_s = self.retry_not_before_s.get(api_key)
        during = key_not_before_s is not None and now_s < key_not_before_s
        if during:
            self.arrivals_during_retry_after += 1
        if client_request_id is None:
            early = during
        else:
            own_not_before_s = self.request_not_before_s.get(client_request_id)
            early = own_not_before_s is not None and now_s < own_not_before_s
        if early:
            self.early_retries += 1
            self.keys[api_key].early_retries += 1
        return early

    def on_retry_after(
        self, api_key: str, now_s: float, wait_s: float, client_request_id: str | None = None
    ) -> None:
        self.retry_not_before_s[api_key] = max(
            self.retry_not_before_s.get(api_key, 0.0), now_s + wait_s
        )
        if client_request_id is not None:
            self.request_not_before_s[client_request_id] = now_s + wait_s

    def on_status(self, status: int) -> None:
        self.by_status[status] += 1

    def on_admitted(self, api_key: str) -> None:
        self.admitted += 1
        self.keys[api_key].admitted += 1

    def on_refused(self, api_key: str, reason: str) -> None:
        self.refused[reason] += 1
        self.keys[api_key].refused[reason] += 1

    def on_stream_start(self) -> None:
        self.streams_started += 1

    def on_stream_end(self) -> None:
        self.streams_finished += 1

    def on_debit(self, pool: str, debited: Mapping[str, float], now_s: float) -> None:
        for dim, amount in debited.items():
            self.debits[(pool, dim)].append((now_s, amount))

    def snapshot(
        self, now_s: float, limits: Mapping[tuple[str, str], tuple[float, float]]
    ) -> dict[str, Any]:
        """The JSON form. ``limits`` maps (pool, dim) -> (capacity, window_s) right now."""
        elapsed_s = max(now_s - self.started_s, 1e-9)
        pools: dict[str, dict[str, Any]] = {}
        for (pool, dim), (capacity, window_s) in sorted(limits.items()):
            debits = self.debits.get((pool, dim), [])
            admitted_cost = sum(amount for _, amount in debits)
            pools.setdefault(pool, {})[dim] = {
                "capacity": capacity,
                "window_s": window_s,
                "admitted_cost": admitted_cost,
                "peak_window_cost": peak_window_sum(debits, window_s),
                "achieved_per_s": admitted_cost / elapsed_s,
                "configured_per_s": capacity / window_s,
            }
        return {
            "now_s": now_s,
            "elapsed_s": now_s - self.started_s,
            "requests": self.requests,
            "admitted": self.admitted,
            "admitted_per_s": self.admitted / elapsed_s,
            "by_status": {str(code): n for code, n in sorted(self.by_status.items())},
            "refused": dict(self.refused),
            "early_retries": self.early_retries,
            "streams": {
                "started": self.streams_started,
                "finished": self.streams_finished,
                "open": self.streams_started - self.streams_finished,
            },
            "arrivals_during_retry_after": self.arrivals_during_retry_after,
            "stainless_retry_count": dict(self.stainless_retry_count),
            "keys": {
                key: {
                    "admitted": ks.admitted,
                    "refused": dict(ks.refused),
                    "early_retries": ks.early_retries,
                }
                for key, ks in self.keys.items()
            },
            "pools": pools,
        }
