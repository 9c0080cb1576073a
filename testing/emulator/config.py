"""Emulator configuration: dataclasses, validation, and loading from TOML/JSON mappings.

A file looks like this (TOML; JSON with the same structure also works)::

    profile = "openai"            # openai | anthropic | azure | gemini
    clock = "real"                # real | manual (manual enables /__emu/clock/advance)
    seed = 0
    count_rejected = true         # omit for the profile default (openai/azure: true)
    output_mode = "realtime"      # anthropic output accounting: realtime | reserve
    default_max_tokens = 4096     # cost of a request without max_tokens
    retry_after_header = true     # send retry-after on rate-limit 429s

    [latency]
    ttft_ms = 0                   # time to first token
    tokens_per_s = 0              # generation speed; 0 = instantaneous
    output_fraction = [0.2, 1.0]  # output = max_tokens * a per-request fraction in this range

    [keys]                        # api key -> organization (unknown keys: default_org)
    "sk-team-a" = "org-a"

    [[pools]]
    name = "gpt-4o"
    models = ["gpt-4o", "gpt-4o-*"]      # fnmatch patterns; "*" = every model
    limits = { requests = "60/s", tokens = "20000/s", tokens_day = "1M/day" }
    # limits.tokens = { capacity = 20000, window_s = 1 } is the long form

    [[faults]]
    kind = "rate_limit"           # see FaultKind
    start_s = 2                   # emulator time (seconds since start/reset)
    duration_s = 5
    retry_after_s = 3

Dimension names start with ``requests``, ``tokens``, ``input_tokens`` or
``output_tokens``; a suffix (``tokens_day``) names another bucket of the same kind.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from throttle.errors import ConfigError
from throttle.limits import parse_rate

_E = TypeVar("_E", bound=StrEnum)


class Profile(StrEnum):
    """Which provider's wire format and accounting a route speaks."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    AZURE = "azure"
    GEMINI = "gemini"


class OutputMode(StrEnum):
    """Anthropic output-token accounting."""

    #: Admit only if the output bucket is above 0; debit actual output when generated.
    REALTIME = "realtime"
    #: Debit max_tokens at admission, refund the unused part at the end.
    RESERVE = "reserve"


class MeterKind(StrEnum):
    BUCKET = "bucket"
    SLIDING = "sliding"


class ClockKind(StrEnum):
    REAL = "real"
    MANUAL = "manual"


class FaultKind(StrEnum):
    """Injected misbehaviour. "Replacing" kinds answer instead of the normal path."""

    RATE_LIMIT = "rate_limit"  # 429 storm with retry_after_s (default 1)
    HUGE_RETRY_AFTER = "huge_retry_after"  # 429 with retry-after 86400
    INSUFFICIENT_QUOTA = "insufficient_quota"
    CREDIT_BALANCE_EXHAUSTED = "credit_balance_exhausted"
    SLOW_DOWN = "slow_down"
    SPEND_CAP = "spend_cap"  # 429 without retry-after
    SERVER_ERROR = "server_error"  # 5xx, status default 500
    OVERLOADED = "overloaded"  # OpenAI 503 server_is_overloaded, Anthropic 529
    DROP_CONNECTION = "drop_connection"  # close the socket without answering
    # Modifiers: change the normal answer.
    MISSING_HEADERS = "missing_headers"
    NEGATIVE_HEADERS = "negative_headers"  # rate-limit headers set to -1
    SLOW = "slow"  # add delay_ms
    SHOULD_RETRY = "should_retry"  # add x-should-retry: true|false
    # Scheduled event.
    LIMIT_CHANGE = "limit_change"  # at start_s, set `limits` on `pool` without notice


MODIFIER_KINDS = frozenset(
    {FaultKind.MISSING_HEADERS, FaultKind.NEGATIVE_HEADERS, FaultKind.SLOW, FaultKind.SHOULD_RETRY}
)

#: The cost kinds a dimension name can start with, longest first.
COST_KINDS: tuple[str, ...] = ("input_tokens", "output_tokens", "requests", "tokens")


def cost_kind(dimension: str) -> str:
    """The cost kind of a dimension name: ``tokens_day`` -> ``tokens``."""
    for kind in COST_KINDS:
        if dimension == kind or dimension.startswith(kind + "_"):
            return kind
    raise ConfigError(
        f"limit dimension {dimension!r}: name must start with one of {', '.join(COST_KINDS)}"
    )


@dataclass(frozen=True)
class LimitConfig:
    """``capacity`` units per ``window_s`` seconds."""

    capacity: float
    window_s: float

    @property
    def rate_per_s(self) -> float:
        return self.capacity / self.window_s

    @classmethod
    def parse(cls, value: object, where: str) -> LimitConfig:
        """From ``"60/s"``, ``"90k/min"``, ``"100/2s"`` or ``{capacity=, window_s=}``."""
        if isinstance(value, LimitConfig):
            return value
        if isinstance(value, str):
            try:
                rate, zone = parse_rate(value)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from exc
            if zone is not None:
                raise ConfigError(f"{where}: calendar windows ('@ zone') are not emulated")
            return cls(rate.capacity, rate.period_s)
        if isinstance(value, Mapping):
            capacity = _number(value.get("capacity"), f"{where}.capacity")
            window_s = _number(value.get("window_s", 60.0), f"{where}.window_s")
            if capacity <= 0 or window_s <= 0:
                raise ConfigError(f"{where}: capacity and window_s must be positive")
            return cls(capacity, window_s)
        raise ConfigError(f"{where}: expected '60/s' or {{capacity, window_s}}, got {value!r}")

    def to_spec(self) -> str:
        return f"{self.capacity:.15g}/{self.window_s:.15g}s"


def parse_limits(value: object, where: str) -> dict[str, LimitConfig]:
    """A ``{dimension: spec}`` mapping, validated."""
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a table of dimension = limit")
    limits: dict[str, LimitConfig] = {}
    for dim, spec in value.items():
        try:
            cost_kind(str(dim))
        except ConfigError as exc:
            raise ConfigError(f"{where}.{dim}: {exc}") from exc
        limits[str(dim)] = LimitConfig.parse(spec, f"{where}.{dim}")
    return limits


def parse_limits_text(text: str, where: str = "--limits") -> dict[str, LimitConfig]:
    """``"requests=60/s,tokens=20000/s"`` -> limits."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        dim, sep, spec = item.partition("=")
        if not sep:
            raise ConfigError(f"{where}: {item!r} is not dimension=limit")
        pairs[dim.strip()] = spec.strip()
    return parse_limits(pairs, where)


#: Limits a pool gets when none are configured, by profile.
DEFAULT_LIMITS: Mapping[Profile, Mapping[str, str]] = {
    Profile.OPENAI: {"requests": "500/min", "tokens": "30000/min"},
    Profile.AZURE: {"requests": "180/min", "tokens": "30000/min"},
    Profile.ANTHROPIC: {
        "requests": "50/min",
        "input_tokens": "30000/min",
        "output_tokens": "8000/min",
    },
    Profile.GEMINI: {"requests": "15/min", "tokens": "1M/min"},
}


@dataclass(frozen=True)
class PoolConfig:
    """A quota shared by every model matching ``models`` (fnmatch patterns)."""

    name: str
    limits: Mapping[str, LimitConfig]
    models: tuple[str, ...] = ("*",)
    #: ``None``: sliding logs for the azure profile, continuous buckets otherwise.
    meter: MeterKind | None = None


@dataclass(frozen=True)
class LatencyConfig:
    """How long a completion takes: ``ttft_ms + output_tokens / tokens_per_s``."""

    ttft_ms: float = 0.0
    #: Generation speed in tokens per second; 0 means instantaneous.
    tokens_per_s: float = 0.0
    #: Output length is ``max_tokens`` times a per-request fraction in this range.
    output_fraction_min: float = 0.2
    output_fraction_max: float = 1.0


@dataclass(frozen=True)
class FaultConfig:
    """One injected fault, active from ``start_s`` for ``duration_s`` (emulator seconds).

    ``probability`` < 1 makes it random (seeded); ``api_key`` / ``pool`` restrict it;
    ``max_hits`` stops it after that many affected requests. ``delay_ms``: the ``slow``
    modifier adds it to a normal answer; a replacing fault (a 429 storm...) is decided
    when the request arrives and answered that much later (requests in flight at once).
    """

    kind: FaultKind
    start_s: float = 0.0
    duration_s: float | None = None
    probability: float = 1.0
    api_key: str | None = None
    pool: str | None = None
    max_hits: int | None = None
    retry_after_s: float | None = None
    status: int | None = None
    delay_ms: float = 0.0
    should_retry: bool = True
    limits: Mapping[str, LimitConfig] = field(default_factory=dict)

    def active_at(self, t_s: float) -> bool:
        if t_s < self.start_s:
            return False
        return self.duration_s is None or t_s < self.start_s + self.duration_s

    @classmethod
    def from_mapping(cls, data: object, where: str, *, now_s: float = 0.0) -> FaultConfig:
        """Build from a table; ``after_s`` (instead of ``start_s``) is relative to ``now_s``."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a table")
        known = set(cls.__dataclass_fields__) | {"after_s"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
        kind = _enum(FaultKind, data.get("kind"), f"{where}.kind")
        start_s = _number(data.get("start_s", 0.0), f"{where}.start_s")
        if "after_s" in data:
            start_s = now_s + _number(data["after_s"], f"{where}.after_s")
        probability = _number(data.get("probability", 1.0), f"{where}.probability")
        if not 0.0 <= probability <= 1.0:
            raise ConfigError(f"{where}.probability: must be within [0, 1]")
        limits = parse_limits(data.get("limits", {}), f"{where}.limits")
        if kind is FaultKind.LIMIT_CHANGE and not limits:
            raise ConfigError(f"{where}.limits: a limit_change needs limits")
        return cls(
            kind=kind,
            start_s=start_s,
            duration_s=_optional_number(data.get("duration_s"), f"{where}.duration_s"),
            probability=probability,
            api_key=_optional_str(data.get("api_key"), f"{where}.api_key"),
            pool=_optional_str(data.get("pool"), f"{where}.pool"),
            max_hits=_optional_int(data.get("max_hits"), f"{where}.max_hits"),
            retry_after_s=_optional_number(data.get("retry_after_s"), f"{where}.retry_after_s"),
            status=_optional_int(data.get("status"), f"{where}.status"),
            delay_ms=_number(data.get("delay_ms", 0.0), f"{where}.delay_ms"),
            should_retry=bool(data.get("should_retry", True)),
            limits=limits,
        )

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind.value, "start_s": self.start_s}
        for name in ("duration_s", "api_key", "pool", "max_hits", "retry_after_s", "status"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out.update(
            probability=self.probability, delay_ms=self.delay_ms, should_retry=self.should_retry
        )
        if self.limits:
            out["limits"] = {dim: lim.to_spec() for dim, lim in self.limits.items()}
        return out


@dataclass(frozen=True)
class EmulatorConfig:
    """Everything the emulator needs. See the module docstring for the file form."""

    profile: Profile = Profile.OPENAI
    pools: tuple[PoolConfig, ...] = ()
    #: API key -> organization; pools are separate per organization.
    keys: Mapping[str, str] = field(default_factory=dict)
    default_org: str = "org-emulator"
    latency: LatencyConfig = LatencyConfig()
    faults: tuple[FaultConfig, ...] = ()
    #: Debit one request for a rate-limited request; ``None``: profile default.
    count_rejected: bool | None = None
    output_mode: OutputMode = OutputMode.REALTIME
    default_max_tokens: int = 4096
    chars_per_token: float = 4.0
    retry_after_header: bool = True
    clock: ClockKind = ClockKind.REAL
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.pools:
            limits = parse_limits(DEFAULT_LIMITS[self.profile], "pools[0].limits")
            object.__setattr__(self, "pools", (PoolConfig("default", limits),))
        names = [pool.name for pool in self.pools]
        if len(set(names)) != len(names):
            raise ConfigError(f"pools: duplicate pool names in {names}")
        for i, fault in enumerate(self.faults):
            if fault.pool is not None and fault.pool not in names:
                raise ConfigError(f"faults[{i}].pool: no pool named {fault.pool!r}")
        if self.default_max_tokens < 1:
            raise ConfigError("default_max_tokens: must be >= 1")
        if self.chars_per_token <= 0:
            raise ConfigError("chars_per_token: must be positive")
        lat = self.latency
        if lat.ttft_ms < 0 or lat.tokens_per_s < 0:
            raise ConfigError("latency: ttft_ms and tokens_per_s must be >= 0")
        if not 0.0 < lat.output_fraction_min <= lat.output_fraction_max <= 1.0:
            raise ConfigError("latency.output_fraction: need 0 < min <= max <= 1")

    @property
    def effective_count_rejected(self) -> bool:
        if self.count_rejected is not None:
            return self.count_rejected
        return self.profile in (Profile.OPENAI, Profile.AZURE)

    def pool_meter(self, pool: PoolConfig) -> MeterKind:
        if pool.meter is not None:
            return pool.meter
        return MeterKind.SLIDING if self.profile is Profile.AZURE else MeterKind.BUCKET

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> EmulatorConfig:
        """Build from a parsed TOML/JSON document; errors name the offending key."""
        known = {
            "profile", "pools", "keys", "default_org", "latency", "faults", "count_rejected",
            "output_mode", "default_max_tokens", "chars_per_token", "retry_after_header",
            "clock", "seed",
        }  # fmt: skip
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown emulator config key {unknown[0]!r}")
        profile = _enum(Profile, data.get("profile", "openai"), "profile")
        pools = tuple(
            _pool(item, f"pools[{i}]") for i, item in enumerate(_list(data.get("pools"), "pools"))
        )
        faults = tuple(
            FaultConfig.from_mapping(item, f"faults[{i}]")
            for i, item in enumerate(_list(data.get("faults"), "faults"))
        )
        keys = data.get("keys", {})
        if not isinstance(keys, Mapping) or not all(isinstance(v, str) for v in keys.values()):
            raise ConfigError("keys: expected a table of api key = organization")
        count_rejected = data.get("count_rejected")
        if count_rejected is not None and not isinstance(count_rejected, bool):
            raise ConfigError("count_rejected: expected true or false")
        return cls(
            profile=profile,
            pools=pools,
            keys={str(k): v for k, v in keys.items()},
            default_org=str(data.get("default_org", "org-emulator")),
            latency=_latency(data.get("latency", {})),
            faults=faults,
            count_rejected=count_rejected,
            output_mode=_enum(OutputMode, data.get("output_mode", "realtime"), "output_mode"),
            default_max_tokens=int(
                _number(data.get("default_max_tokens", 4096), "default_max_tokens")
            ),
            chars_per_token=_number(data.get("chars_per_token", 4.0), "chars_per_token"),
            retry_after_header=bool(data.get("retry_after_header", True)),
            clock=_enum(ClockKind, data.get("clock", "real"), "clock"),
            seed=int(_number(data.get("seed", 0), "seed")),
        )

    def to_mapping(self) -> dict[str, Any]:
        """The JSON/TOML form; ``from_mapping(to_mapping())`` gives an equal config."""
        out: dict[str, Any] = {
            "profile": self.profile.value,
            "pools": [
                {
                    "name": pool.name,
                    "models": list(pool.models),
                    "limits": {dim: lim.to_spec() for dim, lim in pool.limits.items()},
                    **({"meter": pool.meter.value} if pool.meter else {}),
                }
                for pool in self.pools
            ],
            "keys": dict(self.keys),
            "default_org": self.default_org,
            "latency": {
                "ttft_ms": self.latency.ttft_ms,
                "tokens_per_s": self.latency.tokens_per_s,
                "output_fraction": [
                    self.latency.output_fraction_min,
                    self.latency.output_fraction_max,
                ],
            },
            "faults": [fault.to_mapping() for fault in self.faults],
            "output_mode": self.output_mode.value,
            "default_max_tokens": self.default_max_tokens,
            "chars_per_token": self.chars_per_token,
            "retry_after_header": self.retry_after_header,
            "clock": self.clock.value,
            "seed": self.seed,
        }
        if self.count_rejected is not None:
            out["count_rejected"] = self.count_rejected
        return out


def load_config(path: str | Path) -> EmulatorConfig:
    """Read a ``.toml`` or ``.json`` emulator config file."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise ConfigError(f"emulator config {str(file)!r}: {exc.strerror}") from exc
    try:
        data = json.loads(raw) if file.suffix == ".json" else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"emulator config {str(file)!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"emulator config {str(file)!r}: expected a table at top level")
    return EmulatorConfig.from_mapping(data)


def _pool(data: object, where: str) -> PoolConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a table")
    unknown = sorted(set(data) - {"name", "models", "limits", "meter"})
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name: expected a non-empty string")
    models = data.get("models", ["*"])
    if isinstance(models, str):
        models = [models]
    if not isinstance(models, Sequence) or not all(isinstance(m, str) for m in models):
        raise ConfigError(f"{where}.models: expected a list of model names or patterns")
    limits = parse_limits(data.get("limits"), f"{where}.limits")
    if not limits:
        raise ConfigError(f"{where}.limits: a pool needs at least one limit")
    meter = data.get("meter")
    return PoolConfig(
        name=name,
        limits=limits,
        models=tuple(models),
        meter=None if meter is None else _enum(MeterKind, meter, f"{where}.meter"),
    )


def _latency(data: object) -> LatencyConfig:
    if not isinstance(data, Mapping):
        raise ConfigError("latency: expected a table")
    unknown = sorted(set(data) - {"ttft_ms", "tokens_per_s", "output_fraction"})
    if unknown:
        raise ConfigError(f"latency: unknown key {unknown[0]!r}")
    fraction = data.get("output_fraction", [0.2, 1.0])
    if not (isinstance(fraction, Sequence) and len(fraction) == 2):
        raise ConfigError("latency.output_fraction: expected [min, max]")
    return LatencyConfig(
        ttft_ms=_number(data.get("ttft_ms", 0.0), "latency.ttft_ms"),
        tokens_per_s=_number(data.get("tokens_per_s", 0.0), "latency.tokens_per_s"),
        output_fraction_min=_number(fraction[0], "latency.output_fraction[0]"),
        output_fraction_max=_number(fraction[1], "latency.output_fraction[1]"),
    )


def _list(value: object, where: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list")
    return value


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number")
    return float(value)


def _optional_number(value: object, where: str) -> float | None:
    return None if value is None else _number(value, where)


def _optional_int(value: object, where: str) -> int | None:
    return None if value is None else int(_number(value, where))


def _optional_str(value: object, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected a string")


def _enum(enum: type[_E], value: object, where: str) -> _E:
    try:
        return enum(str(value))
    except ValueError:
        choices = ", ".join(member.value for member in enum)
        raise ConfigError(f"{where}: {value!r} is not one of {choices}") from None
