"""The emulator's brain, with no sockets: its state per run and the way into it.

:class:`Emulator` holds the pools per organization, the limits, the armed faults, the
clock and the statistics behind one lock. :meth:`Emulator.complete` parses a request,
finds its pool and the faults that hit it, and has :mod:`~testing.emulator.answers` build
a :class:`Reply`, a :class:`Deferred` (latency) or a :class:`Streamed` (SSE). Tests can
drive it directly with a :class:`ManualClock`; the HTTP layer (``http.py``, ``app.py``)
only frames bytes.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections import deque
from collections.abc import Mapping
from fnmatch import fnmatchcase
from typing import Any

from testing.emulator.answers import Answer, Answerer, Exchange
from testing.emulator.calls import InvalidBodyError, parse_call
from testing.emulator.clock import Clock, ManualClock, MonotonicClock, WallTime
from testing.emulator.config import EmulatorConfig, PoolConfig
from testing.emulator.fault_config import FaultConfig
from testing.emulator.faults import FaultSchedule
from testing.emulator.kinds import ClockKind
from testing.emulator.limits import LimitConfig, limit_specs
from testing.emulator.pools import PoolState
from testing.emulator.profiles import all_rules
from testing.emulator.request import CompletionRequest, api_key_of
from testing.emulator.stats import Stats
from throttle.errors import ConfigError

#: How many completion requests' bodies the emulator keeps (``GET /__emu/requests``).
RECENT_BODIES = 64


class Emulator:
    """An in-memory LLM provider. Thread-safe: every public method takes one lock.

    Parameters:
        config: the emulator configuration (defaults: OpenAI profile, one pool).
        clock: source of monotonic seconds; by default a :class:`ManualClock` when
            ``config.clock`` is ``manual``, else the real monotonic clock.
        wall_epoch_s: Unix time matching the clock's current reading (default: now);
            used only for the ``date`` header and RFC 3339 resets.
    """

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        clock: Clock | None = None,
        wall_epoch_s: float | None = None,
    ) -> None:
        self.config = config or EmulatorConfig()
        if clock is None:
            clock = ManualClock() if self.config.clock is ClockKind.MANUAL else MonotonicClock()
        self.clock = clock
        self._wall = WallTime(clock.now_s(), wall_epoch_s)
        self._rules = all_rules()
        self._lock = threading.Lock()
        self._id_prefix = secrets.token_hex(6)
        self._seq = 0
        self._reset_locked()

    # ---------------------------------------------------------------- public API

    def complete(self, request: CompletionRequest) -> Answer:
        """Handle one completion request."""
        with self._lock:
            return self._complete(request)

    def advance_clock(self, seconds: float) -> float:
        """Advance a manual clock; returns emulator time in seconds."""
        if not isinstance(self.clock, ManualClock):
            raise ConfigError("clock: advancing needs clock = 'manual' in the emulator config")
        if not seconds >= 0:
            raise ConfigError("seconds: must be a number >= 0")
        with self._lock:
            return self.clock.advance(seconds) - self._origin_s

    def now_s(self) -> float:
        """Emulator time: seconds since start or the last reset."""
        return self.clock.now_s() - self._origin_s

    def add_faults(self, faults: list[FaultConfig], *, replace: bool = False) -> None:
        """Arm more faults (``replace``: instead of the current ones)."""
        for i, fault in enumerate(faults):
            if fault.pool is not None and fault.pool not in self._limits:
                raise ConfigError(f"faults[{i}].pool: no pool named {fault.pool!r}")
        with self._lock:
            self._faults.add(faults, replace=replace)

    def set_limits(self, limits: Mapping[str, LimitConfig], pool: str | None = None) -> None:
        """Change limits mid-run, without notice (``pool=None``: every pool)."""
        with self._lock:
            self._set_limits_locked(limits, pool)

    def reset(self) -> None:
        """Full buckets, config limits and faults, zeroed stats, time origin at now."""
        with self._lock:
            self._reset_locked()

    def recent_requests(self) -> list[dict[str, Any]]:
        """The last completion requests' decoded bodies, oldest first, each with its
        ``x-client-request-id``."""
        with self._lock:
            return list(self._recent)

    def state(self) -> dict[str, Any]:
        with self._lock:
            now_s = self.clock.now_s()
            return {
                "pid": os.getpid(),  # who answers on this port (a starter checks it)
                "now_s": now_s - self._origin_s,
                "clock": "manual" if isinstance(self.clock, ManualClock) else "real",
                "profile": self.config.profile.value,
                "limits": {pool: limit_specs(dims) for pool, dims in self._limits.items()},
                "pools": {
                    state.label: {
                        snap.name: {
                            "capacity": snap.capacity,
                            "window_s": snap.window_s,
                            "level": snap.level,
                            "time_to_full_s": snap.time_to_full_s,
                        }
                        for snap in state.snapshots(now_s)
                    }
                    for state in self._pools.values()
                },
                "faults": self._faults.describe(),
            }

    def stats(self) -> dict[str, Any]:
        with self._lock:
            limits = {
                (state.label, dim.name): (dim.meter.capacity, dim.meter.window_s)
                for state in self._pools.values()
                for dim in state.dims
            }
            return self._stats.snapshot(self.now_s(), limits)

    # ---------------------------------------------------------------- internals

    def _reset_locked(self) -> None:
        self._origin_s = self.clock.now_s()
        self._limits: dict[str, dict[str, LimitConfig]] = {
            pool.name: dict(pool.limits) for pool in self.config.pools
        }
        self._pools: dict[tuple[str, str], PoolState] = {}
        self._model_pools: dict[str, PoolConfig | None] = {}
        self._faults = FaultSchedule(self.config.faults, self.config.seed)
        self._stats = Stats(started_s=0.0)
        #: The bodies of the last RECENT_BODIES completion requests, as received (for
        #: tests: what a client sent the provider; ``GET /__emu/requests``).
        self._recent: deque[dict[str, Any]] = deque(maxlen=RECENT_BODIES)
        self._answers = Answerer(
            self.config, self.clock, self._lock, self._wall, self._stats, self._origin_s
        )

    def _set_limits_locked(self, limits: Mapping[str, LimitConfig], pool: str | None) -> None:
        if pool is not None and pool not in self._limits:
            raise ConfigError(f"pool: no pool named {pool!r} (have {sorted(self._limits)})")
        now_s = self.clock.now_s()
        for name, current in self._limits.items():
            if pool is None or name == pool:
                current.update(limits)
        for (_, name), state in self._pools.items():
            if pool is None or name == pool:
                state.set_limits(limits, now_s)

    def _next_id(self) -> str:
        self._seq += 1
        return f"req_{self._id_prefix}{self._seq:012x}"

    def _pool_for(self, model: str) -> PoolConfig | None:
        if model not in self._model_pools:
            self._model_pools[model] = next(
                (
                    pool
                    for pool in self.config.pools
                    if any(fnmatchcase(model, pattern) for pattern in pool.models)
                ),
                None,
            )
        return self._model_pools[model]

    def _pool_state(self, org: str, pool: PoolConfig, now_s: float) -> PoolState:
        key = (org, pool.name)
        state = self._pools.get(key)
        if state is None:
            meter = self.config.pool_meter(pool)
            state = PoolState(f"{org}/{pool.name}", self._limits[pool.name], meter, now_s)
            self._pools[key] = state
        return state

    def _complete(self, request: CompletionRequest) -> Answer:
        now_s = self.clock.now_s()
        t_s = now_s - self._origin_s
        for change in self._faults.due_limit_changes(t_s):
            self._set_limits_locked(change.limits, change.pool)
        rules = self._rules[request.profile]
        api_key = api_key_of(request)
        org = self.config.keys.get(api_key, self.config.default_org)
        self._stats.on_arrival(
            api_key,
            t_s,
            request.headers.get("x-stainless-retry-count"),
            request.headers.get("x-client-request-id"),
        )
        request_id = self._next_id()
        try:
            data = json.loads(request.body) if request.body else None
            self._recent.append(
                {"request_id": request.headers.get("x-client-request-id"), "body": data}
            )
            call = parse_call(request.profile, request.body, data, request.path_model, self.config)
        except (ValueError, InvalidBodyError) as exc:
            return self._answers.error(rules, 400, str(exc), now_s)
        pool = self._pool_for(call.model)
        if pool is None:
            message = f"The model {call.model!r} does not exist or you do not have access to it."
            return self._answers.error(rules, 404, message, now_s)
        state = self._pool_state(org, pool, now_s)
        selection = self._faults.select(t_s, api_key, pool.name)
        ex = Exchange(request, rules, call, api_key, org, request_id, state, now_s, t_s)
        if selection.replacement is not None:
            return self._answers.fault(ex, selection.replacement, selection.modifiers)
        return self._answers.admit(ex, selection.modifiers)
