"""The demo's end-of-run report, pure: measurement from the run's facts and its text.

Utilization is what the provider (the emulator's own counters) admitted per second in
the steady middle of each pool's busy stretch, against the pool's limit; waits and parks
come from the throttle facts each result carries.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tools.demo_plan import DemoPlan, DemoRequest, per_minute


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile must be within [0, 100]: {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class Outcome:
    """What one finished task reported."""

    model: str
    tenant: str
    ok: bool
    error: str | None = None
    #: From enqueue to the start of the provider call that succeeded: throttle sleeps,
    #: time parked, 429 pauses and the hop through the broker, all of it.
    wait_s: float = 0.0
    parks: int = 0
    rate_limited: int = 0
    attempts: int = 0

    @classmethod
    def from_result(
        cls, request: DemoRequest, enqueued_at_s: float, result: Mapping[str, Any]
    ) -> Outcome:
        """``enqueued_at_s``: wall-clock epoch seconds; ``started_ms`` in the result's
        throttle facts is the worker's wall clock (the same machine here)."""
        facts = result.get("throttle") or {}
        started_ms = facts.get("started_ms")
        wait_s = (
            max(0.0, float(started_ms) / 1000.0 - enqueued_at_s)
            if started_ms is not None
            else float(facts.get("waited_s", 0.0))
        )
        return cls(
            request.model,
            request.tenant,
            ok=True,
            wait_s=wait_s,
            parks=int(facts.get("parks", 0)),
            rate_limited=int(facts.get("rate_limited", 0)),
            attempts=int(facts.get("attempts", 0)),
        )

    @classmethod
    def failed(cls, request: DemoRequest, error: str) -> Outcome:
        return cls(request.model, request.tenant, ok=False, error=error)


#: ``(emulator seconds, {(pool, dimension): cost admitted so far})``: both read by the
#: emulator at the same instant, so polling delays do not skew rates.
Sample = tuple[float, Mapping[tuple[str, str], float]]


def sample_of(stats: Mapping[str, Any]) -> Sample:
    """One sample from ``GET /__emu/stats``."""
    return float(stats["now_s"]), admitted_costs(stats)


def admitted_costs(stats: Mapping[str, Any]) -> dict[tuple[str, str], float]:
    """From ``GET /__emu/stats``: cost admitted so far per (pool name, dimension)."""
    out: dict[tuple[str, str], float] = {}
    for label, dims in stats.get("pools", {}).items():
        pool = label.rsplit("/", 1)[-1]
        for dim, figures in dims.items():
            out[(pool, dim)] = float(figures["admitted_cost"])
    return out


@dataclass(frozen=True)
class Window:
    """A stretch of the run, seconds since it started."""

    start_s: float
    end_s: float

    @property
    def length_s(self) -> float:
        return self.end_s - self.start_s


def busy_window(samples: Sequence[Sample], key: tuple[str, str]) -> Window | None:
    """From the last sample before ``key``'s cost first rose to the first sample at its
    final value: while the pool was serving. ``None`` if it never moved."""
    if not samples:
        return None
    final = samples[-1][1].get(key, 0.0)
    start = end = None
    for i, (t_s, costs) in enumerate(samples):
        cost = costs.get(key, 0.0)
        if start is None and cost > 0.0:
            start = samples[i - 1][0] if i > 0 else t_s
        if cost >= final:
            end = t_s
            break
    if start is None or end is None or end <= start:
        return None
    return Window(start, end)


def steady_rate_per_s(
    samples: Sequence[Sample], key: tuple[str, str], window: Window, trim: float = 0.15
) -> float | None:
    """Cost per second admitted over the middle of ``window`` (``trim`` cut off each end:
    the opening burst from a full bucket and the draining tail are not steady state).
    ``None`` when fewer than two samples fall inside."""
    lo_s = window.start_s + trim * window.length_s
    hi_s = window.end_s - trim * window.length_s
    inside = [(t_s, costs.get(key, 0.0)) for t_s, costs in samples if lo_s <= t_s <= hi_s]
    if len(inside) < 2 or inside[-1][0] - inside[0][0] <= 0:
        return None
    (t0_s, c0), (t1_s, c1) = inside[0], inside[-1]
    return (c1 - c0) / (t1_s - t0_s)


@dataclass(frozen=True)
class LimitLine:
    group: str
    dimension: str
    limit_per_min: float
    achieved_per_min: float | None

    @property
    def utilization(self) -> float | None:
        if self.achieved_per_min is None or self.limit_per_min <= 0:
            return None
        return self.achieved_per_min / self.limit_per_min


@dataclass(frozen=True)
class GroupLine:
    group: str
    tasks: int
    failed: int
    parked: int
    rate_limited: int
    wait_p50_s: float | None
    wait_p99_s: float | None
    busy_s: float | None


@dataclass(frozen=True)
class TenantLine:
    tenant: str
    by_model: Mapping[str, int]
    failed: int
    wait_p50_s: float | None
    wait_p99_s: float | None

    @property
    def tasks(self) -> int:
        return sum(self.by_model.values())


@dataclass(frozen=True)
class DemoReport:
    tasks: int
    failed: int
    unfinished: int
    wall_s: float
    startup_s: float
    workload_s: float
    provider_429s: int
    #: Why the provider refused, e.g. ``{"rate_limit:tokens": 1}``.
    refusals: Mapping[str, int]
    early_retries: int
    limits: tuple[LimitLine, ...]
    groups: tuple[GroupLine, ...]
    tenants: tuple[TenantLine, ...]
    models: tuple[str, ...]
    tenant_limits: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    errors: tuple[str, ...] = ()


def _waits(outcomes: Sequence[Outcome]) -> tuple[float | None, float | None]:
    waits = [o.wait_s for o in outcomes if o.ok]
    if not waits:
        return None, None
    return percentile(waits, 50), percentile(waits, 99)


def build_report(
    plan: DemoPlan,
    outcomes: Sequence[Outcome],
    unfinished: int,
    samples: Sequence[Sample],
    final_stats: Mapping[str, Any],
    *,
    wall_s: float,
    startup_s: float,
    workload_s: float,
) -> DemoReport:
    """Everything the report shows, computed from the run's facts (no I/O)."""
    limit_lines: list[LimitLine] = []
    group_lines: list[GroupLine] = []
    for m in plan.models:
        window = busy_window(samples, (m.pool, "requests"))
        for dim, spec in m.limits.items():
            rate = None if window is None else steady_rate_per_s(samples, (m.pool, dim), window)
            limit_lines.append(
                LimitLine(m.group, dim, per_minute(spec), None if rate is None else rate * 60)
            )
        mine = [o for o in outcomes if o.model == m.model]
        p50, p99 = _waits(mine)
        group_lines.append(
            GroupLine(
                m.group,
                tasks=len(mine),
                failed=sum(not o.ok for o in mine),
                parked=sum(o.parks > 0 for o in mine),
                rate_limited=sum(o.rate_limited for o in mine),
                wait_p50_s=p50,
                wait_p99_s=p99,
                busy_s=None if window is None else window.length_s,
            )
        )
    tenant_lines = []
    for t in plan.tenants:
        mine = [o for o in outcomes if o.tenant == t.name]
        p50, p99 = _waits(mine)
        by_model = {m.model: sum(o.model == m.model for o in mine) for m in plan.models}
        tenant_lines.append(TenantLine(t.name, by_model, sum(not o.ok for o in mine), p50, p99))
    errors = sorted({o.error for o in outcomes if o.error})
    return DemoReport(
        tasks=len(outcomes) + unfinished,
        failed=sum(not o.ok for o in outcomes),
        unfinished=unfinished,
        wall_s=wall_s,
        startup_s=startup_s,
        workload_s=workload_s,
        provider_429s=int(final_stats.get("by_status", {}).get("429", 0)),
        refusals=dict(final_stats.get("refused", {})),
        early_retries=int(final_stats.get("early_retries", 0)),
        limits=tuple(limit_lines),
        groups=tuple(group_lines),
        tenants=tuple(tenant_lines),
        models=tuple(m.model for m in plan.models),
        tenant_limits=plan.tenant_limits,
        errors=tuple(errors[:5]),
    )


# -- rendering ------------------------------------------------------------------------


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _reasons(refusals: Mapping[str, int]) -> str:
    if not refusals:
        return ""
    return " (" + ", ".join(f"{why} {n}" for why, n in sorted(refusals.items())) + ")"


def _table(rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(w) if r else cell.ljust(w)
            for cell, w, r in zip(row, widths, right, strict=True)
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines


def format_report(report: DemoReport) -> str:
    """The end-of-run report, plain text."""
    done = report.tasks - report.failed - report.unfinished
    out = [
        "",
        "== llm-throttle demo: report " + "=" * 50,
        f"wall time {report.wall_s:.1f} s  (stack start {report.startup_s:.1f} s,"
        f" workload {report.workload_s:.1f} s)",
        f"tasks: {report.tasks} enqueued, {done} succeeded, {report.failed} failed,"
        f" {report.unfinished} unfinished",
        f"provider 429s: {report.provider_429s}{_reasons(report.refusals)}"
        f"   early retries: {report.early_retries}   (the emulator's own counters)",
        "",
        "Limits: steady-state rate the provider admitted, against its limit",
    ]
    rows = [["group", "limit", "configured", "achieved", "utilization", ""]]
    for group in dict.fromkeys(line.group for line in report.limits):
        mine = [line for line in report.limits if line.group == group]
        top = max(mine, key=lambda line: line.utilization or 0.0)
        for i, line in enumerate(mine):
            achieved = line.achieved_per_min
            rows.append(
                [
                    group if i == 0 else "",
                    line.dimension,
                    f"{_count(line.limit_per_min)}/min",
                    "n/a" if achieved is None else f"{_count(achieved)}/min",
                    _percent(line.utilization),
                    "binding" if line is top and line.utilization is not None else "",
                ]
            )
    out += _table(rows, [False, False, True, True, True, False])
    if any(line.utilization is None for line in report.limits):
        out.append("  (n/a: the run was too short for a steady state; try more --tasks)")
    out += ["", "Groups: waits from enqueue to the provider call (throttle facts in results)"]
    rows = [["group", "tasks", "failed", "parked", "429s seen", "wait p50", "wait p99", "busy"]]
    rows += [
        [
            g.group,
            str(g.tasks),
            str(g.failed),
            str(g.parked),
            str(g.rate_limited),
            _seconds(g.wait_p50_s),
            _seconds(g.wait_p99_s),
            "n/a" if g.busy_s is None else f"{g.busy_s:.1f} s",
        ]
        for g in report.groups
    ]
    out += _table(rows, [False, *[True] * 7])
    caps = "; ".join(
        f"{group}: " + ", ".join(f"{dim} {spec}" for dim, spec in limits.items())
        for group, limits in report.tenant_limits.items()
    )
    out += ["", "Tenants" + (f" (each capped at {caps})" if caps else "")]
    rows = [["tenant", "tasks", *report.models, "failed", "wait p50", "wait p99"]]
    rows += [
        [
            t.tenant,
            str(t.tasks),
            *(str(t.by_model.get(m, 0)) for m in report.models),
            str(t.failed),
            _seconds(t.wait_p50_s),
            _seconds(t.wait_p99_s),
        ]
        for t in report.tenants
    ]
    out += _table(rows, [False, *[True] * (len(rows[0]) - 1)])
    if report.errors:
        out += ["", "Errors (first kinds):", *(f"  {e}" for e in report.errors)]
    return "\n".join(out) + "\n"


def format_banner(plan: DemoPlan, tasks: int) -> str:
    """What the demo is about to run, with its limits per second and per minute."""
    lines = [
        f"llm-throttle demo: {tasks} completions, {len(plan.models)} models,"
        f" {len(plan.tenants)} tenants, {plan.workers} workers x {plan.threads_per_worker}"
        " threads",
        "provider emulator (OpenAI profile), limits per second, one pool per model:",
    ]
    for m in plan.models:
        limits = ", ".join(
            f"{dim} {spec} (= {_count(per_minute(spec))}/min)" for dim, spec in m.limits.items()
        )
        lines.append(f"  {m.model:<12} {limits}")
    return "\n".join(lines) + "\n"


def flower_command(config_path: str, broker_url: str, celery_bin: str = "celery") -> str:
    """The shell command that opens Flower on the demo's broker."""
    return (
        f"LLM_THROTTLE_CONFIG={shlex.quote(config_path)} {shlex.quote(celery_bin)}"
        f" -A workers.app --broker={shlex.quote(broker_url)} flower --port=5555"
    )
