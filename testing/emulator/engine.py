"""The emulator's brain: pools, admission, faults and statistics, with no sockets.

:meth:`Emulator.complete` takes a parsed HTTP request and returns a :class:`Reply` (or a
:class:`Deferred` when latency is configured). Tests can drive it directly with a
:class:`ManualClock`; the HTTP layer (``http.py``, ``app.py``) only frames bytes.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Any

from testing.emulator.admission import Outcome, debit_all, debit_rejected, decide
from testing.emulator.calls import (
    Call,
    InvalidBodyError,
    admission_costs,
    gated_kinds,
    parse_call,
    settlement_costs,
)
from testing.emulator.clock import Clock, ManualClock, MonotonicClock
from testing.emulator.config import EmulatorConfig, PoolConfig
from testing.emulator.fault_config import FaultConfig
from testing.emulator.faults import FaultSchedule, announced_retry_after_s
from testing.emulator.formats import http_date
from testing.emulator.kinds import ClockKind, FaultKind, Profile
from testing.emulator.limits import LimitConfig, limit_specs
from testing.emulator.pools import PoolState
from testing.emulator.profiles import ProfileRules, all_rules
from testing.emulator.profiles.base import FaultInfo, Headers, RejectInfo
from testing.emulator.profiles.streams import schedule
from testing.emulator.replies import Deferred, Reply, Streamed, json_bytes
from testing.emulator.stats import Stats
from throttle.errors import ConfigError

#: Header name prefixes that the missing/-1 header faults act on.
RATE_HEADER_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
RETRY_HEADERS = ("retry-after", "retry-after-ms")
DEFAULT_API_VERSION = "2024-08-01-preview"
#: How many completion requests' bodies the emulator keeps (``GET /__emu/requests``).
RECENT_BODIES = 64


@dataclass(frozen=True)
class CompletionRequest:
    """A completion call as the routes deliver it. Header names are lower-case."""

    profile: Profile
    headers: Mapping[str, str]
    body: bytes
    #: Model (Gemini) or deployment (Azure) taken from the path.
    path_model: str | None = None
    api_version: str = DEFAULT_API_VERSION
    #: Gemini's ``?key=`` query parameter.
    query_key: str | None = None


def api_key_of(request: CompletionRequest) -> str:
    """The caller's API key from whichever header its provider uses; else ``anonymous``."""
    headers = request.headers
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    for name in ("x-api-key", "api-key", "x-goog-api-key"):
        if name in headers:
            return headers[name]
    return request.query_key or "anonymous"


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
        self._wall_anchor = (
            time.time() if wall_epoch_s is None else wall_epoch_s,
            clock.now_s(),
        )
        self._rules = all_rules()
        self._lock = threading.Lock()
        self._id_prefix = secrets.token_hex(6)
        self._seq = 0
        self._date_cache = (-1, "")
        self._reset_locked()

    # ---------------------------------------------------------------- public API

    def complete(self, request: CompletionRequest) -> Reply | Deferred | Streamed:
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

    def _wall_s(self, now_s: float) -> float:
        wall0_s, mono0_s = self._wall_anchor
        return wall0_s + (now_s - mono0_s)

    def _date(self, wall_s: float) -> str:
        second = int(wall_s)
        if self._date_cache[0] != second:
            self._date_cache = (second, http_date(wall_s))
        return self._date_cache[1]

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

    def _complete(self, request: CompletionRequest) -> Reply | Deferred | Streamed:
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
            return self._finish(self._error(rules, 400, str(exc), now_s), [], api_key)
        pool = self._pool_for(call.model)
        if pool is None:
            message = f"The model {call.model!r} does not exist or you do not have access to it."
            return self._finish(self._error(rules, 404, message, now_s), [], api_key)
        state = self._pool_state(org, pool, now_s)
        selection = self._faults.select(t_s, api_key, pool.name)
        ctx = _Context(request, rules, call, api_key, org, request_id, state, now_s, t_s)
        fault = selection.replacement
        if fault is not None:
            reply = self._finish(self._fault(ctx, fault), selection.modifiers, api_key)
            if fault.delay_ms > 0 and not reply.drop:  # decided now, answered later
                return Deferred(fault.delay_ms / 1000.0, lambda: reply)
            return reply
        return self._admit(ctx, selection.modifiers)

    def _admit(self, ctx: _Context, modifiers: list[FaultConfig]) -> Reply | Deferred | Streamed:
        config, state, now_s = self.config, ctx.state, ctx.now_s
        costs = admission_costs(ctx.call, config)
        verdict = decide(state.dims, costs, now_s, gated=gated_kinds(ctx.call, config))
        if verdict.outcome is not Outcome.ADMITTED:
            assert verdict.dimension is not None
            if verdict.outcome is Outcome.RATE_LIMITED and config.effective_count_rejected:
                debit_rejected(state.dims, now_s)
            info = RejectInfo(
                model=ctx.call.model,
                org=ctx.org,
                dimension=verdict.dimension,
                kind=next(d.kind for d in state.dims if d.name == verdict.dimension),
                capacity=verdict.capacity,
                window_s=verdict.window_s,
                used=verdict.capacity - verdict.level,
                requested=verdict.requested,
                wait_s=verdict.wait_s,
                retry_after_s=ctx.rules.retry_after_value(verdict.wait_s),
                request_id=ctx.request_id,
                api_version=ctx.request.api_version,
            )
            headers = self._common_headers(ctx, now_s, processing_ms=0)
            if verdict.outcome is Outcome.TOO_LARGE:
                status, body = ctx.rules.too_large(info)
                self._stats.on_refused(ctx.api_key, f"too_large:{verdict.dimension}")
            else:
                status, body = ctx.rules.rate_limited(info)
                if config.retry_after_header:
                    headers += ctx.rules.retry_headers(verdict.wait_s)
                self._stats.on_refused(ctx.api_key, f"rate_limit:{verdict.dimension}")
                self._stats.on_retry_after(
                    ctx.api_key,
                    ctx.t_s,
                    ctx.rules.announced_wait_s(verdict.wait_s),
                    ctx.request.headers.get("x-client-request-id"),
                )
            return self._finish(Reply(status, headers, json_bytes(body)), modifiers, ctx.api_key)
        self._stats.on_admitted(ctx.api_key)
        self._stats.on_debit(state.label, debit_all(state.dims, costs, now_s), ctx.t_s)
        delay_s = self._latency_s(ctx.call) + sum(m.delay_ms for m in modifiers) / 1000.0
        settle = settlement_costs(ctx.call, config)
        if ctx.call.stream:
            events = ctx.rules.stream(ctx.call, ctx.request_id, self._wall_s(now_s))
            if events is not None:
                return self._streamed(ctx, modifiers, events, delay_s, settle)

        def complete() -> Reply:
            end_s = self.clock.now_s()
            if settle:
                debited = debit_all(state.dims, settle, end_s)
                self._stats.on_debit(state.label, debited, end_s - self._origin_s)
            headers = self._common_headers(ctx, end_s, processing_ms=round(delay_s * 1000))
            body = ctx.rules.success(ctx.call, ctx.request_id, self._wall_s(end_s))
            return self._finish(Reply(200, headers, json_bytes(body)), modifiers, ctx.api_key)

        if delay_s <= 0:
            return complete()

        def complete_locked() -> Reply:
            with self._lock:
                return complete()

        return Deferred(delay_s, complete_locked)

    def _streamed(
        self,
        ctx: _Context,
        modifiers: list[FaultConfig],
        events: Sequence[tuple[str, bytes]],
        delay_s: float,
        settle: Mapping[str, float],
    ) -> Streamed:
        """The admitted request's answer as server-sent events over its latency: the
        head (rate-limit headers as of admission) at once, the events from the time to
        first token on; the settlement when the last one is out."""
        ttft_s = min(delay_s, self.config.latency.ttft_ms / 1000.0)
        headers = self._common_headers(ctx, ctx.now_s, processing_ms=0)
        headers = [(k, v) for k, v in headers if k != "content-type"]
        headers = [("content-type", "text/event-stream; charset=utf-8"), *headers]
        head = self._finish(Reply(200, headers), modifiers, ctx.api_key)
        self._stats.on_stream_start()
        state = ctx.state

        def finish() -> None:
            with self._lock:
                end_s = self.clock.now_s()
                if settle:
                    debited = debit_all(state.dims, settle, end_s)
                    self._stats.on_debit(state.label, debited, end_s - self._origin_s)
                self._stats.on_stream_end()

        chunks = schedule(events, ttft_s, delay_s - ttft_s)
        return Streamed(head.status, head.headers, chunks, finish)

    def _fault(self, ctx: _Context, fault: FaultConfig) -> Reply:
        self._stats.on_refused(ctx.api_key, f"fault:{fault.kind.value}")
        if fault.kind is FaultKind.DROP_CONNECTION:
            return Reply(0, [], drop=True)
        retry_s = announced_retry_after_s(fault)
        info = FaultInfo(
            kind=fault.kind,
            model=ctx.call.model,
            org=ctx.org,
            retry_after_s=retry_s,
            status=fault.status,
            request_id=ctx.request_id,
            api_version=ctx.request.api_version,
            wall_s=self._wall_s(ctx.now_s),
            request_limit=next(
                (d.meter.capacity for d in ctx.state.dims if d.kind == "requests"), 1.0
            ),
        )
        status, body = ctx.rules.fault(info)
        headers = self._common_headers(ctx, ctx.now_s, processing_ms=0)
        if retry_s is not None:
            headers += ctx.rules.retry_headers(retry_s)
            self._stats.on_retry_after(
                ctx.api_key,
                ctx.t_s,
                ctx.rules.announced_wait_s(retry_s),
                ctx.request.headers.get("x-client-request-id"),
            )
        return Reply(status, headers, json_bytes(body))

    def _common_headers(self, ctx: _Context, now_s: float, processing_ms: int) -> Headers:
        wall_s = self._wall_s(now_s)
        return [
            ("content-type", "application/json"),
            ("date", self._date(wall_s)),
            *ctx.rules.id_headers(ctx.request_id, processing_ms, ctx.org),
            *ctx.rules.rate_headers(ctx.state.snapshots(now_s), wall_s),
        ]

    def _error(self, rules: ProfileRules, status: int, message: str, now_s: float) -> Reply:
        headers = [("content-type", "application/json"), ("date", self._date(self._wall_s(now_s)))]
        return Reply(status, headers, json_bytes(rules.invalid(status, message)))

    def _latency_s(self, call: Call) -> float:
        latency = self.config.latency
        delay_s = latency.ttft_ms / 1000.0
        if latency.tokens_per_s > 0:
            delay_s += call.output_tokens / latency.tokens_per_s
        return delay_s

    def _finish(self, reply: Reply, modifiers: list[FaultConfig], api_key: str) -> Reply:
        """Apply header faults and count the status."""
        if modifiers and not reply.drop:
            reply = apply_modifiers(reply, modifiers)
        self._stats.on_status(0 if reply.drop else reply.status)
        return reply


@dataclass(frozen=True)
class _Context:
    request: CompletionRequest
    rules: ProfileRules
    call: Call
    api_key: str
    org: str
    request_id: str
    state: PoolState
    now_s: float
    t_s: float


def _is_rate_header(name: str) -> bool:
    return name.startswith(RATE_HEADER_PREFIXES)


def apply_modifiers(reply: Reply, modifiers: list[FaultConfig]) -> Reply:
    """Strip or corrupt rate-limit headers, add ``x-should-retry``."""
    headers = list(reply.headers)
    for fault in modifiers:
        if fault.kind is FaultKind.MISSING_HEADERS:
            headers = [(k, v) for k, v in headers if not (_is_rate_header(k) or k in RETRY_HEADERS)]
        elif fault.kind is FaultKind.NEGATIVE_HEADERS:
            headers = [(k, "-1" if _is_rate_header(k) else v) for k, v in headers]
        elif fault.kind is FaultKind.SHOULD_RETRY:
            headers.append(("x-should-retry", "true" if fault.should_retry else "false"))
    return replace(reply, headers=headers)
