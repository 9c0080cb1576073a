"""The emulator's whole configuration: pools, keys, latency, faults; read from TOML/JSON.

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

Limits and dimension names: :mod:`testing.emulator.limits`; fault fields:
:class:`~testing.emulator.fault_config.FaultConfig`.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testing.emulator.fault_config import FaultConfig
from testing.emulator.fields import as_list, member, number, reject_unknown
from testing.emulator.kinds import ClockKind, MeterKind, OutputMode, Profile
from testing.emulator.limits import LimitConfig, limit_specs, parse_limits
from throttle.errors import ConfigError

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
        known = (
            "profile", "pools", "keys", "default_org", "latency", "faults", "count_rejected",
            "output_mode", "default_max_tokens", "chars_per_token", "retry_after_header",
            "clock", "seed",
        )  # fmt: skip
        reject_unknown(data, known, "emulator config")
        profile = member(Profile, data.get("profile", "openai"), "profile")
        pools = tuple(
            _pool(item, f"pools[{i}]") for i, item in enumerate(as_list(data.get("pools"), "pools"))
        )
        faults = tuple(
            FaultConfig.from_mapping(item, f"faults[{i}]")
            for i, item in enumerate(as_list(data.get("faults"), "faults"))
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
            output_mode=member(OutputMode, data.get("output_mode", "realtime"), "output_mode"),
            default_max_tokens=int(
                number(data.get("default_max_tokens", 4096), "default_max_tokens")
            ),
            chars_per_token=number(data.get("chars_per_token", 4.0), "chars_per_token"),
            retry_after_header=bool(data.get("retry_after_header", True)),
            clock=member(ClockKind, data.get("clock", "real"), "clock"),
            seed=int(number(data.get("seed", 0), "seed")),
        )

    def to_mapping(self) -> dict[str, Any]:
        """The JSON/TOML form; ``from_mapping(to_mapping())`` gives an equal config."""
        out: dict[str, Any] = {
            "profile": self.profile.value,
            "pools": [
                {
                    "name": pool.name,
                    "models": list(pool.models),
                    "limits": limit_specs(pool.limits),
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
    reject_unknown(data, ("name", "models", "limits", "meter"), where)
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
        meter=None if meter is None else member(MeterKind, meter, f"{where}.meter"),
    )


def _latency(data: object) -> LatencyConfig:
    if not isinstance(data, Mapping):
        raise ConfigError("latency: expected a table")
    reject_unknown(data, ("ttft_ms", "tokens_per_s", "output_fraction"), "latency")
    fraction = data.get("output_fraction", [0.2, 1.0])
    if not (isinstance(fraction, Sequence) and len(fraction) == 2):
        raise ConfigError("latency.output_fraction: expected [min, max]")
    return LatencyConfig(
        ttft_ms=number(data.get("ttft_ms", 0.0), "latency.ttft_ms"),
        tokens_per_s=number(data.get("tokens_per_s", 0.0), "latency.tokens_per_s"),
        output_fraction_min=number(fraction[0], "latency.output_fraction[0]"),
        output_fraction_max=number(fraction[1], "latency.output_fraction[1]"),
    )
