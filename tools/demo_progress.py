"""The demo's progress line: a bar redrawn in place on a terminal, plain periodic lines
when the output is a file or a pipe. No dependency beyond ANSI and carriage return."""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO


def format_duration(seconds: float | None) -> str:
    """``"0:42"``, ``"12:05"``, ``"1:02:03"``; ``"--:--"`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def recent_rate_per_s(history: Sequence[tuple[float, int]], window_s: float = 5.0) -> float:
    """Completions per second over the last ``window_s`` of ``(t_s, done)`` points."""
    if len(history) < 2:
        return 0.0
    t_now, done_now = history[-1]
    earlier = [(t, d) for t, d in history if t >= t_now - window_s]
    t0, d0 = earlier[0] if earlier[0][0] < t_now else history[-2]
    return (done_now - d0) / (t_now - t0) if t_now > t0 else 0.0


@dataclass(frozen=True)
class Progress:
    done: int
    total: int
    #: Sent to the broker so far (the total once enqueueing is over).
    enqueued: int
    failed: int
    elapsed_s: float
    rate_per_s: float
    provider_429s: int
    parked: int

    @property
    def eta_s(self) -> float | None:
        if self.done >= self.total:
            return 0.0
        if self.rate_per_s <= 0:
            return None
        return (self.total - self.done) / self.rate_per_s


def render_progress(p: Progress, width: int = 80, bar: bool = True) -> str:
    """One status line; with ``bar``, a bar fills what ``width`` leaves free."""
    percent = 100.0 * p.done / p.total if p.total else 100.0
    failed = f"  failed {p.failed}" if p.failed else ""
    sending = f"  enqueued {p.enqueued}" if p.enqueued < p.total else ""
    info = (
        f"{p.done}/{p.total} {percent:3.0f}%{sending}  {p.rate_per_s:5.1f}/s"
        f"  ETA {format_duration(p.eta_s)}  elapsed {format_duration(p.elapsed_s)}"
        f"  429s {p.provider_429s}  parked {p.parked}{failed}"
    )
    if not bar:
        return info
    cells = max(10, min(40, width - len(info) - 4))
    filled = int(cells * p.done / p.total) if p.total else cells
    return f"[{'#' * filled}{'.' * (cells - filled)}] {info}"[: max(width - 1, 20)]


class ProgressDisplay:
    """A self-redrawing line on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, out: TextIO, every_s: float = 5.0) -> None:
        self.out = out
        self.tty = out.isatty()
        self.every_s = every_s
        self._last_line_s = -math.inf

    def show(self, p: Progress, final: bool = False) -> None:
        if self.tty:
            width = shutil.get_terminal_size((100, 24)).columns
            self.out.write("\r\x1b[2K" + render_progress(p, width))
            if final:
                self.out.write("\n")
        elif final or p.elapsed_s - self._last_line_s >= self.every_s:
            self._last_line_s = p.elapsed_s
            self.out.write(render_progress(p, bar=False) + "\n")
        self.out.flush()
