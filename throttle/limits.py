"""The limit model: a limit *group* holds several *dimensions*, each a capacity per period.

A group such as ``openai:gpt-4o-mini`` has, for example, ``requests = 3500/min``,
``tokens = 90k/min`` and ``requests_day = 10000/day @ America/Los_Angeles``, plus an
optional concurrency cap. One admission checks and debits every dimension at once.

Algorithms:

* ``gcra`` (default): a continuous token bucket in its GCRA form. It holds ``capacity``
  and refills at ``capacity / period``, the way OpenAI and Anthropic replenish.
* ``sliding``: a sliding-window log. Each admission's cost returns exactly one period
  after its start (Azure's rolling 60 s token window).
* ``calendar``: a fixed window aligned to a calendar boundary in a time zone (daily
  quotas that reset at midnight Pacific).

Specs are human forms: ``3500/min``, ``90k/min``, ``1.5M/day``, ``20/s``, ``100/2s``,
``10000/day @ America/Los_Angeles`` (calendar window in that zone).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from throttle.calendar import check_calendar_period
from throttle.errors import ConfigError, LimitSpecError

#: Seconds per period unit, by every spelling accepted in a spec.
PERIOD_UNITS_S: Mapping[str, float] = {
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), 0.001),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1.0),
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60.0),
    **dict.fromkeys(("h", "hr", "hour", "hours"), 3600.0),
    **dict.fromkeys(("d", "day", "days"), 86400.0),
}

#: Multipliers accepted after a capacity: ``90k``, ``1.5M``.
CAPACITY_SUFFIXES: Mapping[str, float] = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6}

_SPEC = re.compile(
    r"""^\s*
    (?P<number>\d+(?:[_,]\d{3})*(?:\.\d+)?)(?P<suffix>[kKM]?)
    \s*/\s*
    (?P<count>\d+(?:\.\d+)?)?\s*(?P<unit>[A-Za-z]+)
    \s*(?:@\s*(?P<zone>\S+))?\s*$""",
    re.VERBOSE,
)

_NAME = re.compile(r"^[A-Za-z0-9_.:\-]+$")
#: A limit group's name: a configured group's, or ``<group>@<credential>`` for one
#: credential's own buckets of a group that lists several (throttle.config).
_GROUP_NAME = re.compile(r"^[A-Za-z0-9_.:\-]+(@[A-Za-z0-9_.:\-]+)?$")

_AUTO = re.compile(r"^\s*auto\s*(?:/\s*(?P<count>\d+(?:\.\d+)?)?\s*(?P<unit>[A-Za-z]+))?\s*$")


class Algorithm(StrEnum):
    GCRA = "gcra"
    SLIDING = "sliding"
    CALENDAR = "calendar"


@dataclass(frozen=True)
class Rate:
    """``capacity`` units per ``period_s`` seconds."""

    capacity: float
    period_s: float

    @property
    def per_second(self) -> float:
        return self.capacity / self.period_s


def parse_rate(text: str) -> tuple[Rate, str | None]:
    """Parse ``"90k/min"`` into a :class:`Rate`, plus the time zone after ``@`` if any.

    >>> parse_rate("90k/min")
    (Rate(capacity=90000.0, period_s=60.0), None)
    >>> parse_rate("100/2s")
    (Rate(capacity=100.0, period_s=2.0), None)
    """
    if not isinstance(text, str):
        raise LimitSpecError(text, "expected a string such as '3500/min'")
    match = _SPEC.match(text)
    if match is None:
        raise LimitSpecError(text, "expected '<number>[k|M]/[<count>]<unit>', e.g. '90k/min'")
    unit = match["unit"]
    if unit not in PERIOD_UNITS_S:
        raise LimitSpecError(text, f"unknown period unit {unit!r}")
    capacity = float(match["number"].replace("_", "").replace(",", ""))
    capacity *= CAPACITY_SUFFIXES[match["suffix"]]
    count = float(match["count"]) if match["count"] else 1.0
    period_s = count * PERIOD_UNITS_S[unit]
    if capacity <= 0:
        raise LimitSpecError(text, "capacity must be positive")
    if period_s <= 0:
        raise LimitSpecError(text, "period must be positive")
    return Rate(capacity, period_s), match["zone"]


def parse_auto(text: str) -> float | None:
    """The period in seconds of an ``auto`` limit (``"auto"`` is per minute, or
    ``"auto/day"``, ``"auto/10s"``); None when ``text`` is not an auto limit.

    >>> parse_auto("auto/day")
    86400.0
    """
    match = _AUTO.match(text)
    if match is None:
        return None
    if match["unit"] is None:
        return 60.0
    if match["unit"] not in PERIOD_UNITS_S:
        raise LimitSpecError(text, f"unknown period unit {match['unit']!r}")
    period_s = float(match["count"] or 1.0) * PERIOD_UNITS_S[match["unit"]]
    if period_s <= 0:
        raise LimitSpecError(text, "period must be positive")
    return period_s


@dataclass(frozen=True)
class Dimension:
    """One limit of a group: ``capacity`` units per ``period_s``, enforced by ``algorithm``."""

    name: str
    capacity: float
    period_s: float
    algorithm: Algorithm = Algorithm.GCRA
    #: IANA zone for calendar windows (``America/Los_Angeles``); UTC when ``None``.
    timezone: str | None = None
    #: ``auto`` limits: ``capacity`` is only where the group starts. The capacity the
    #: provider reports in its headers replaces it, higher or lower; without headers
    #: the AIMD multiplier discovers it (see :func:`effective_capacity`).
    auto: bool = False

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ConfigError(f"dimension name {self.name!r}: use letters, digits, _ . : -")
        if not (self.capacity > 0 and math.isfinite(self.capacity)):
            raise ConfigError(f"dimension {self.name!r}: capacity must be positive")
        if not (self.period_s > 0 and math.isfinite(self.period_s)):
            raise ConfigError(f"dimension {self.name!r}: period must be positive")
        if self.algorithm is Algorithm.CALENDAR:
            check_calendar_period(self.period_s)
        if self.auto and self.algorithm is not Algorithm.GCRA:
            raise ConfigError(f"dimension {self.name!r}: auto limits need algorithm gcra")
        if self.timezone is not None:
            if self.algorithm is not Algorithm.CALENDAR:
                raise ConfigError(f"dimension {self.name!r}: a time zone needs algorithm calendar")
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise ConfigError(
                    f"dimension {self.name!r}: unknown time zone {self.timezone!r}"
                ) from exc

    @classmethod
    def parse(cls, name: str, spec: str, algorithm: Algorithm | str | None = None) -> Dimension:
        """Build from a spec string; ``@ Zone`` implies a calendar window."""
        rate, zone = parse_rate(spec)
        if algorithm is None:
            algo = Algorithm.CALENDAR if zone else Algorithm.GCRA
        else:
            try:
                algo = Algorithm(algorithm)
            except ValueError as exc:
                choices = ", ".join(a.value for a in Algorithm)
                raise LimitSpecError(spec, f"unknown algorithm {algorithm!r} ({choices})") from exc
        if zone is None and algo is Algorithm.CALENDAR:
            zone = "UTC"
        return cls(name, rate.capacity, rate.period_s, algo, zone)

    @property
    def period_ms(self) -> float:
        return self.period_s * 1000.0

    @property
    def emission_interval_ms(self) -> float:
        """Time the bucket takes to refill one unit, in milliseconds."""
        return self.period_ms / self.capacity


@dataclass(frozen=True)
class Aimd:
    """How the group's shared rate multiplier reacts to the provider (DESIGN principle 6).

    On a 429 the multiplier is multiplied by ``decrease`` (once per epoch: 429s to
    requests admitted before the last decrease do not count again), never below
    ``floor``; after each clean window without a decrease it grows by ``increase``, up
    to 1 (the configured or learned capacity).
    """

    decrease: float = 0.6
    increase: float = 0.05
    floor: float = 0.05

    def __post_init__(self) -> None:
        if not 0 < self.decrease < 1:
            raise ConfigError(f"aimd.decrease must be in (0, 1): {self.decrease}")
        if not 0 < self.increase <= 1:
            raise ConfigError(f"aimd.increase must be in (0, 1]: {self.increase}")
        if not 0 < self.floor <= 1:
            raise ConfigError(f"aimd.floor must be in (0, 1]: {self.floor}")


#: A sliding log's default wire margin (LimitGroup.window_ms): this fraction of its
#: window, at least WIRE_MARGIN_MIN_S (a busy worker's delay between the check and
#: the send) and at most WIRE_MARGIN_MAX_S. Azure's 60 s token log keeps entries
#: 60.25 s, its 10 s request log 10.2 s; a compressed 1 s log 1.05 s.
WIRE_MARGIN_FRACTION = 0.02
WIRE_MARGIN_MIN_S = 0.05
WIRE_MARGIN_MAX_S = 0.25

#: The highest multiplier of an ``auto`` group that has heard no limits: its start
#: capacities may grow a thousandfold by AIMD discovery.
AUTO_MULTIPLIER_CEILING = 1000.0


def effective_capacity(dim: Dimension, learned: float | None, multiplier: float) -> float:
    """The capacity a GCRA dimension runs at, given the limit learned from the
    provider's headers (None: nothing heard) and the group's AIMD multiplier.

    A configured capacity is a ceiling: a learned limit can only lower it. An ``auto``
    dimension follows the learned limit either way. Once a limit is learned, the
    multiplier can only slow the dimension down (below 1 after 429s), never push it
    beyond what the provider said.
    """
    if learned is not None and learned > 0:
        base = learned if dim.auto else min(dim.capacity, learned)
        return base * min(multiplier, 1.0)
    return dim.capacity * multiplier


def sliding_capacity(dim: Dimension, multiplier: float) -> float:
    """The capacity a sliding log runs at: its own, times the group's multiplier while
    429s hold that below 1 (a multiplier above 1 is an ``auto`` group discovering its
    GCRA limits: a window's capacity is configured, never a guess)."""
    return dim.capacity * min(multiplier, 1.0)


def raised_multiplier(aimd: Aimd, multiplier: float, ceiling: float, decreased: bool) -> float:
    """The multiplier after a clean window. Below a ceiling of 1: additive increase by
    ``aimd.increase``. Above (an ``auto`` group discovering its limits): it doubles
    until the first 429 (slow start), then grows by the fraction ``aimd.increase``."""
    if ceiling <= 1.0:
        return min(1.0, multiplier + aimd.increase)
    step = multiplier * (aimd.increase if decreased else 1.0)
    return min(ceiling, multiplier + step)


@dataclass(frozen=True)
class LimitGroup:
    """Every limit one request must pass, admitted together in one atomic step.

    ``headroom`` is a fraction of each GCRA dimension's burst kept unused as margin
    (DESIGN principle 10): a bucket that looks empty to us still holds that much at the
    provider, which absorbs the network hop between Redis's clock and theirs. The
    refill rate is not reduced, so steady throughput is unaffected. A sliding or
    calendar window has no burst apart from its rate: headroom leaves it whole.
    Instead, each entry of a sliding log stays ``wire_margin_s`` longer than the
    window (:meth:`window_ms`): two requests sent one window apart reach the provider
    with different delays, and without the margin the later one can land inside the
    earlier one's window there.
    """

    name: str
    dimensions: tuple[Dimension, ...]
    #: Maximum requests in flight at once, or ``None`` for no cap.
    concurrency: int | None = None
    #: A concurrency lease not released within this time returns by itself.
    lease_ttl_s: float = 600.0
    headroom: float = 0.0
    aimd: Aimd = field(default_factory=Aimd)
    #: How full a GCRA bucket is when the group has no state yet (first use, or idle
    #: long enough for its state to expire). Below 1, a cold group does not fire a
    #: full burst at a provider whose quota others may be using; headers soon tell.
    cold_start: float = 1.0
    #: How much longer than its window a sliding log keeps each entry, in seconds;
    #: None: 2% of the window, within [WIRE_MARGIN_MIN_S, WIRE_MARGIN_MAX_S].
    wire_margin_s: float | None = None
    _by_name: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _GROUP_NAME.match(self.name):
            raise ConfigError(f"limit group name {self.name!r}: use letters, digits, _ . : -")
        if not self.dimensions and self.concurrency is None:
            raise ConfigError(f"limit group {self.name!r} has no dimension and no concurrency")
        names = [d.name for d in self.dimensions]
        if len(set(names)) != len(names):
            raise ConfigError(f"limit group {self.name!r}: duplicate dimension names {names}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError(f"limit group {self.name!r}: concurrency must be >= 1")
        if not 0.0 <= self.headroom < 0.5:
            raise ConfigError(f"limit group {self.name!r}: headroom must be in [0, 0.5)")
        if not 0.0 < self.cold_start <= 1.0:
            raise ConfigError(f"limit group {self.name!r}: cold_start must be in (0, 1]")
        if self.lease_ttl_s <= 0:
            raise ConfigError(f"limit group {self.name!r}: lease_ttl_s must be positive")
        if self.wire_margin_s is not None and not 0.0 <= self.wire_margin_s < math.inf:
            raise ConfigError(f"limit group {self.name!r}: wire_margin_s must be >= 0")
        object.__setattr__(self, "_by_name", {n: i for i, n in enumerate(names)})

    @classmethod
    def from_specs(
        cls,
        name: str,
        specs: Mapping[str, str],
        *,
        concurrency: int | None = None,
        headroom: float = 0.0,
        lease_ttl_s: float = 600.0,
    ) -> LimitGroup:
        """``LimitGroup.from_specs("openai:gpt-4o", {"requests": "500/min", ...})``."""
        dims = tuple(Dimension.parse(dim, spec) for dim, spec in specs.items())
        return cls(name, dims, concurrency, lease_ttl_s, headroom)

    def index(self, dimension: str) -> int:
        try:
            return self._by_name[dimension]
        except KeyError:
            raise ConfigError(
                f"limit group {self.name!r} has no dimension {dimension!r}"
                f" (has {sorted(self._by_name)})"
            ) from None

    @property
    def clean_window_s(self) -> float:
        """A window without 429s after which the multiplier grows: the shortest period."""
        return min((d.period_s for d in self.dimensions), default=60.0)

    def usable_capacity(self, dim: Dimension) -> float:
        """The most one admission can ever take: a GCRA bucket's capacity after
        headroom, a window's whole capacity (unbounded for an ``auto`` dimension, whose
        capacity is not known in advance)."""
        if dim.auto:
            return math.inf
        if dim.algorithm is not Algorithm.GCRA:
            return dim.capacity
        return dim.capacity * (1.0 - self.headroom)

    def window_ms(self, dim: Dimension) -> float:
        """How long a sliding log keeps an entry: its window plus the wire margin."""
        if self.wire_margin_s is not None:
            return dim.period_ms + self.wire_margin_s * 1000.0
        margin_s = max(WIRE_MARGIN_MIN_S, WIRE_MARGIN_FRACTION * dim.period_s)
        return dim.period_ms + min(WIRE_MARGIN_MAX_S, margin_s) * 1000.0

    @property
    def multiplier_ceiling(self) -> float:
        """How high the AIMD multiplier may go: 1 (the configured capacities), or
        :data:`AUTO_MULTIPLIER_CEILING` for a group with ``auto`` dimensions, whose
        start capacities are guesses for AIMD to grow from while the provider reports
        no limits."""
        if any(d.auto for d in self.dimensions if d.algorithm is Algorithm.GCRA):
            return AUTO_MULTIPLIER_CEILING
        return 1.0

    def cost_vector(self, costs: Mapping[str, float]) -> tuple[float, ...]:
        """Costs in dimension order. Unnamed dimensions cost 0; unknown names are errors."""
        vector: list[float] = [0.0] * len(self.dimensions)
        for dim_name, cost in costs.items():
            if not 0 <= cost < math.inf:  # also refuses NaN
                raise ConfigError(f"cost of {dim_name!r} must be a finite number >= 0: {cost!r}")
            vector[self.index(dim_name)] = cost
        return tuple(vector)
