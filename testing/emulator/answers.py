"""One completion's answer: admitted or refused, or replaced by a fault, in the provider's
headers and body, with header faults applied, at once, deferred or streamed over its
latency.

The engine finds the request's pool and faults and hands them over as an
:class:`Exchange`; an :class:`Answerer` debits the pool, counts into the statistics and
builds the answer. Every method runs under the engine's lock; the parts of an answer that
come later (a :class:`Deferred`, a stream's end) take that lock themselves.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from testing.emulator.admission import Outcome, debit_all, debit_rejected, decide
from testing.emulator.calls import Call, admission_costs, gated_kinds, settlement_costs
from testing.emulator.clock import Clock, WallTime
from testing.emulator.config import EmulatorConfig
from testing.emulator.fault_config import FaultConfig
from testing.emulator.faults import announced_retry_after_s
from testing.emulator.kinds import FaultKind
from testing.emulator.pools import PoolState
from testing.emulator.profiles import ProfileRules
from testing.emulator.profiles.base import FaultInfo, Headers, RejectInfo
from testing.emulator.profiles.streams import schedule
from testing.emulator.replies import Deferred, Reply, Streamed, json_bytes
from testing.emulator.request import CompletionRequest
from testing.emulator.stats import Stats

#: Header name prefixes that the missing/-1 header faults act on.
RATE_HEADER_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
RETRY_HEADERS = ("retry-after", "retry-after-ms")

Answer = Reply | Deferred | Streamed


@dataclass(frozen=True)
class Exchange:
    """One parsed completion request, matched to its pool, at clock reading ``now_s``
    (``t_s``: emulator seconds)."""

    request: CompletionRequest
    rules: ProfileRules
    call: Call
    api_key: str
    org: str
    request_id: str
    state: PoolState
    now_s: float
    t_s: float


class Answerer:
    """Answers requests for one run of the emulator (from its start or last reset).

    Parameters:
        config: the emulator configuration.
        clock: the engine's clock, read again when a deferred answer or a stream ends.
        lock: the engine's lock, taken by the parts of an answer that come later.
        wall: Unix time and ``date`` headers for clock readings.
        stats: the run's statistics.
        origin_s: the clock reading at which the run started (emulator time 0).
    """

    def __init__(
        self,
        config: EmulatorConfig,
        clock: Clock,
        lock: threading.Lock,
        wall: WallTime,
        stats: Stats,
        origin_s: float,
    ) -> None:
        self.config = config
        self._clock = clock
        self._lock = lock
        self._wall = wall
        self._stats = stats
        self._origin_s = origin_s

    def admit(self, ex: Exchange, modifiers: list[FaultConfig]) -> Answer:
        """Admit the request on its pool's meters, or refuse it with the provider's 429."""
        config, state, now_s = self.config, ex.state, ex.now_s
        costs = admission_costs(ex.call, config)
        verdict = decide(state.dims, costs, now_s, gated=gated_kinds(ex.call, config))
        if verdict.outcome is not Outcome.ADMITTED:
            assert verdict.dimension is not None
            if verdict.outcome is Outcome.RATE_LIMITED and config.effective_count_rejected:
                debit_rejected(state.dims, now_s)
            info = RejectInfo(
                model=ex.call.model,
                org=ex.org,
                dimension=verdict.dimension,
                kind=next(d.kind for d in state.dims if d.name == verdict.dimension),
                capacity=verdict.capacity,
                window_s=verdict.window_s,
                used=verdict.capacity - verdict.level,
                requested=verdict.requested,
                wait_s=verdict.wait_s,
                retry_after_s=ex.rules.retry_after_value(verdict.wait_s),
                request_id=ex.request_id,
                api_version=ex.request.api_version,
            )
            headers = self._common_headers(ex, now_s, processing_ms=0)
            if verdict.outcome is Outcome.TOO_LARGE:
                status, body = ex.rules.too_large(info)
                self._stats.on_refused(ex.api_key, f"too_large:{verdict.dimension}")
            else:
                status, body = ex.rules.rate_limited(info)
                if config.retry_after_header:
                    headers += ex.rules.retry_headers(verdict.wait_s)
                self._stats.on_refused(ex.api_key, f"rate_limit:{verdict.dimension}")
                self._on_retry_after(ex, verdict.wait_s)
            return self.finish(Reply(status, headers, json_bytes(body)), modifiers)
        self._stats.on_admitted(ex.api_key)
        self._stats.on_debit(state.label, debit_all(state.dims, costs, now_s), ex.t_s)
        delay_s = self._latency_s(ex.call) + sum(m.delay_ms for m in modifiers) / 1000.0
        settle = settlement_costs(ex.call, config)
        if ex.call.stream:
            events = ex.rules.stream(ex.call, ex.request_id, self._wall.wall_s(now_s))
            if events is not None:
                return self._streamed(ex, modifiers, events, delay_s, settle)

        def complete() -> Reply:
            end_s = self._clock.now_s()
            self._settle(state, settle, end_s)
            headers = self._common_headers(ex, end_s, processing_ms=round(delay_s * 1000))
            body = ex.rules.success(ex.call, ex.request_id, self._wall.wall_s(end_s))
            return self.finish(Reply(200, headers, json_bytes(body)), modifiers)

        if delay_s <= 0:
            return complete()

        def complete_locked() -> Reply:
            with self._lock:
                return complete()

        return Deferred(delay_s, complete_locked)

    def fault(self, ex: Exchange, fault: FaultConfig, modifiers: list[FaultConfig]) -> Answer:
        """The answer of a replacing fault, decided now; sent ``delay_ms`` later if set."""
        reply = self.finish(self._fault_reply(ex, fault), modifiers)
        if fault.delay_ms > 0 and not reply.drop:
            return Deferred(fault.delay_ms / 1000.0, lambda: reply)
        return reply

    def error(self, rules: ProfileRules, status: int, message: str, now_s: float) -> Reply:
        """A request the provider cannot parse or route (400, 404), in its error body."""
        date = self._wall.date(self._wall.wall_s(now_s))
        headers = [("content-type", "application/json"), ("date", date)]
        return self.finish(Reply(status, headers, json_bytes(rules.invalid(status, message))), [])

    def finish(self, reply: Reply, modifiers: list[FaultConfig]) -> Reply:
        """Apply header faults and count the status."""
        if modifiers and not reply.drop:
            reply = apply_modifiers(reply, modifiers)
        self._stats.on_status(0 if reply.drop else reply.status)
        return reply

    def _streamed(
        self,
        ex: Exchange,
        modifiers: list[FaultConfig],
        events: Sequence[tuple[str, bytes]],
        delay_s: float,
        settle: Mapping[str, float],
    ) -> Streamed:
        """The admitted request's answer as server-sent events over its latency: the
        head (rate-limit headers as of admission) at once, the events from the time to
        first token on; the settlement when the last one is out."""
        ttft_s = min(delay_s, self.config.latency.ttft_ms / 1000.0)
        headers = self._common_headers(ex, ex.now_s, processing_ms=0)
        headers = [(k, v) for k, v in headers if k != "content-type"]
        headers = [("content-type", "text/event-stream; charset=utf-8"), *headers]
        head = self.finish(Reply(200, headers), modifiers)
        self._stats.on_stream_start()

        def finish() -> None:
            with self._lock:
                self._settle(ex.state, settle, self._clock.now_s())
                self._stats.on_stream_end()

        chunks = schedule(events, ttft_s, delay_s - ttft_s)
        return Streamed(head.status, head.headers, chunks, finish)

    def _settle(self, state: PoolState, settle: Mapping[str, float], end_s: float) -> None:
        """Debit the costs known only at the end (actual output tokens, refunds)."""
        if settle:
            debited = debit_all(state.dims, settle, end_s)
            self._stats.on_debit(state.label, debited, end_s - self._origin_s)

    def _fault_reply(self, ex: Exchange, fault: FaultConfig) -> Reply:
        self._stats.on_refused(ex.api_key, f"fault:{fault.kind.value}")
        if fault.kind is FaultKind.DROP_CONNECTION:
            return Reply(0, [], drop=True)
        retry_s = announced_retry_after_s(fault)
        info = FaultInfo(
            kind=fault.kind,
            model=ex.call.model,
            org=ex.org,
            retry_after_s=retry_s,
            status=fault.status,
            request_id=ex.request_id,
            api_version=ex.request.api_version,
            wall_s=self._wall.wall_s(ex.now_s),
            request_limit=next(
                (d.meter.capacity for d in ex.state.dims if d.kind == "requests"), 1.0
            ),
        )
        status, body = ex.rules.fault(info)
        headers = self._common_headers(ex, ex.now_s, processing_ms=0)
        if retry_s is not None:
            headers += ex.rules.retry_headers(retry_s)
            self._on_retry_after(ex, retry_s)
        return Reply(status, headers, json_bytes(body))

    def _on_retry_after(self, ex: Exchange, wait_s: float) -> None:
        client_id = ex.request.headers.get("x-client-request-id")
        self._stats.on_retry_after(ex.api_key, ex.t_s, ex.rules.announced_wait_s(wait_s), client_id)

    def _common_headers(self, ex: Exchange, now_s: float, processing_ms: int) -> Headers:
        wall_s = self._wall.wall_s(now_s)
        return [
            ("content-type", "application/json"),
            ("date", self._wall.date(wall_s)),
            *ex.rules.id_headers(ex.request_id, processing_ms, ex.org),
            *ex.rules.rate_headers(ex.state.snapshots(now_s), wall_s),
        ]

    def _latency_s(self, call: Call) -> float:
        latency = self.config.latency
        delay_s = latency.ttft_ms / 1000.0
        if latency.tokens_per_s > 0:
            delay_s += call.output_tokens / latency.tokens_per_s
        return delay_s


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
