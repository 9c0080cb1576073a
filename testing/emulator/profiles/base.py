"""What every provider profile supplies: rate-limit headers, bodies, fault answers.

Profiles are pure: they format values handed to them and hold no state.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from testing.emulator.calls import Call
from testing.emulator.formats import retry_after_s
from testing.emulator.kinds import FaultKind, Profile

Headers = list[tuple[str, str]]
Body = dict[str, Any]

#: Text of every emulated completion; usage, not content, is what matters here.
COMPLETION_TEXT = "This is an emulated completion."


@dataclass(frozen=True)
class DimSnapshot:
    """One dimension's state after this request's debit, for headers."""

    name: str
    kind: str
    capacity: float
    window_s: float
    level: float
    time_to_full_s: float


@dataclass(frozen=True)
class RejectInfo:
    """Why a request was refused, in the terms the bodies need."""

    model: str
    org: str
    dimension: str
    kind: str
    capacity: float
    window_s: float
    #: ``capacity - level`` before this request.
    used: float
    requested: float
    #: Seconds until the request fits, and the integer ``retry-after`` derived from it.
    wait_s: float
    retry_after_s: int
    request_id: str
    api_version: str


@dataclass(frozen=True)
class FaultInfo:
    """Context for an injected fault's answer."""

    kind: FaultKind
    model: str
    org: str
    #: Seconds to announce (``None``: no retry-after at all).
    retry_after_s: float | None
    status: int | None
    request_id: str
    api_version: str
    wall_s: float
    #: The pool's requests capacity, quoted by rate-limit bodies ("Limit N").
    request_limit: float = 1.0


def binding(snaps: Sequence[DimSnapshot], kind: str) -> DimSnapshot | None:
    """The bucket of ``kind`` with the longest time to full (e.g. TPD over TPM)."""
    best: DimSnapshot | None = None
    for snap in snaps:
        if snap.kind == kind and (best is None or snap.time_to_full_s > best.time_to_full_s):
            best = snap
    return best


def int_text(value: float) -> str:
    """A capacity as header text: ``160000``, never ``160000.0``."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def floor_text(value: float) -> str:
    """``floor(value)`` clamped at 0, as text."""
    return str(max(0, math.floor(value)))


class ProfileRules(ABC):
    """The wire format of one provider."""

    profile: Profile

    @abstractmethod
    def rate_headers(self, snaps: Sequence[DimSnapshot], wall_s: float) -> Headers:
        """Rate-limit headers describing ``snaps`` at wall time ``wall_s``."""

    @abstractmethod
    def retry_headers(self, wait_s: float) -> Headers:
        """Headers announcing a wait of ``wait_s`` seconds on a refusal."""

    @abstractmethod
    def id_headers(self, request_id: str, processing_ms: int, org: str) -> Headers:
        """Request id and similar per-response headers."""

    @abstractmethod
    def success(self, call: Call, request_id: str, wall_s: float) -> Body:
        """A 200 body with realistic ``usage``."""

    @abstractmethod
    def rate_limited(self, info: RejectInfo) -> tuple[int, Body]:
        """Status and body of a retryable rate-limit refusal."""

    @abstractmethod
    def too_large(self, info: RejectInfo) -> tuple[int, Body]:
        """Status and body of the terminal "Request too large" refusal."""

    @abstractmethod
    def fault(self, info: FaultInfo) -> tuple[int, Body]:
        """Status and body of an injected fault."""

    @abstractmethod
    def invalid(self, status: int, message: str) -> Body:
        """Body of a malformed request (400) or unknown model (404)."""

    def stream(self, call: Call, request_id: str, wall_s: float) -> list[tuple[str, bytes]] | None:
        """The events of a streamed answer, each with its phase (``start``, ``content``,
        ``end``); None: this profile answers ``"stream": true`` with one body."""
        return None

    def retry_after_value(self, wait_s: float) -> int:
        """The integer seconds a refusal announces for ``wait_s``: ``max(1, ceil(wait_s))``."""
        return retry_after_s(wait_s)

    def announced_wait_s(self, wait_s: float) -> float:
        """The wait, in seconds, a client learns from this profile's refusal."""
        return float(retry_after_s(wait_s))

    def per_choice_tokens(self, call: Call) -> list[int]:
        """Output tokens of each choice, summing to ``call.output_tokens``."""
        base, extra = divmod(call.output_tokens, call.n)
        return [base + (1 if i < extra else 0) for i in range(call.n)]
