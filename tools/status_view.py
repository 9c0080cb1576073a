"""How ``llm-throttle status`` prints what :mod:`throttle.status` read: a text table
per group, or one JSON document."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from throttle.queue_status import SchedulerStatus, ShareStatus
from throttle.status import GroupStatus, status_document


def status_json(statuses: Sequence[GroupStatus], now_ms: float) -> str:
    return json.dumps(status_document(statuses, now_ms), indent=2, sort_keys=True)


def _amount(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.2f}M"
    if abs(value) >= 1e4:
        return f"{value / 1e3:.1f}k"
    return f"{value:.1f}" if value != int(value) else f"{int(value)}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}s"


def _period(period_s: float) -> str:
    for unit, size in (("day", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if period_s >= size and period_s % size == 0:
            count = int(period_s // size)
            return unit if count == 1 else f"{count}{unit}"
    return f"{period_s:g}s"


def _rows_table(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in rows
    ]


def render_table(statuses: Iterable[GroupStatus]) -> str:
    """The human table: a line per group, then a line per dimension."""
    lines: list[str] = []
    for s in statuses:
        cap = "" if s.concurrency is None else f"/{s.concurrency}"
        paused = f"paused {s.paused_for_s:.1f}s" if s.paused else "open"
        epoch = f" (epoch {s.decrease_epoch_left_s:.1f}s left)" if s.decrease_epoch_left_s else ""
        head = [
            ["GROUP", "GATE", "AIMD x", "IN-FLIGHT", "PARKED", "RELEASING", "LAST 429 DECREASE"],
            [
                s.name,
                paused,
                f"{s.multiplier:.3f}",
                f"{s.in_flight}{cap}",
                str(s.parked),
                str(s.releasing),
                ("-" if s.last_decrease_s_ago is None else f"{s.last_decrease_s_ago:.1f}s ago")
                + epoch,
            ],
        ]
        lines += _rows_table(head)
        dims = [["dimension", "algo", "configured", "learned", "effective", "rate/s", "level"]]
        for d in s.dimensions:
            period = _period(d.period_s)
            dims.append(
                [
                    d.name,
                    d.algorithm,
                    f"{_amount(d.configured_capacity)}/{period}",
                    "-"
                    if d.learned_capacity is None
                    else f"{_amount(d.learned_capacity)}/{period}",
                    f"{_amount(d.effective_capacity)}/{period}",
                    f"{d.effective_rate_per_s:.4g}",
                    "-"
                    if d.level_units is None
                    else f"{_amount(d.level_units)} of {_amount(d.usable_units)}",
                ]
            )
        lines += _rows_table(dims, indent="  ")
        if s.scheduler is not None:
            lines += _scheduler_lines(s.scheduler)
        lines.append("")
    return "\n".join(lines) if lines else "no limit groups configured\n"


_USED_HEAD = ("share", "released", "wait p50", "wait p99")


def _used(used: ShareStatus | None) -> list[str]:
    if used is None:
        return ["-"] * len(_USED_HEAD)
    return [
        f"{used.share:.0%}",
        f"{used.released:.0f}",
        _wait(used.wait_p50_s),
        _wait(used.wait_p99_s),
    ]


def _wait(value_s: float | None) -> str:
    if value_s is None:
        return "-"
    return f"{value_s * 1000:.0f}ms" if value_s < 1 else f"{value_s:.1f}s"


def _scheduler_lines(q: SchedulerStatus) -> list[str]:
    due = "when woken" if q.next_pass_in_s is None else f"in {q.next_pass_in_s:.2f}s"
    state = "saturated" if q.saturated else "open"
    lines = [f"  fair queue: {q.queued} queued, {q.ready} ready; next pass {due} ({state})"]
    rows = [["lane", "ready flows", "virtual time", "credit", *_USED_HEAD]]
    rows += [
        [x.name, str(x.ready_flows), f"{x.virtual_time:.4g}", f"{x.credit:.3f}", *_used(x.used)]
        for x in q.lanes
    ]
    lines += _rows_table(rows, indent="    ")
    if q.flows:
        rows = [["lane", "tenant", "backlog", "weight", "capped for"]]
        rows += [
            [f.lane, f.tenant or "-", str(f.backlog), f"{f.weight:g}",
             _seconds(f.blocked_for_s) if f.blocked_for_s else "-"]
            for f in q.flows
        ]  # fmt: skip
        lines += _rows_table(rows, indent="    ")
    if q.tenants:
        rows = [["lane", "tenant", *_USED_HEAD]]
        rows += [[t.lane, t.tenant or "-", *_used(t.used)] for t in q.tenants]
        lines += ["    released lately (half-life 1 min; * = tenants without a plan):"]
        lines += _rows_table(rows, indent="    ")
    return lines
