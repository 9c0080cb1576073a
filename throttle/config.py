"""Configuration: one TOML file, with environment overrides, validated at start.

Example::

    [redis]
    url = "redis://127.0.0.1:6379/0"     # env LLM_THROTTLE_REDIS_URL
    prefix = "llmt"
    failure_policy = "closed"            # or "open": run unthrottled while Redis is down

    [celery]
    broker_url = "redis://127.0.0.1:6379/1"      # env LLM_THROTTLE_BROKER_URL
    result_backend = "redis://127.0.0.1:6379/2"  # env LLM_THROTTLE_RESULT_BACKEND
    queue = "llm"

    [worker]
    hold_horizon_s = 2.0          # slots nearer than this are slept on in the worker
    throttle_deadline_s = 3600    # budget for throttle waits and 429 pauses per task

    [providers.openai]
    profile = "openai"
    base_url = "https://api.openai.com"
    credential = "openai-prod"    # the worker reads the key; messages never carry it

    [groups."openai:gpt-4o-mini"]
    provider = "openai"
    models = ["gpt-4o-mini"]
    requests = "5000/min"
    tokens = "2M/min"
    requests_day = { limit = "10000/day", timezone = "America/Los_Angeles" }
    concurrency = 100
    tenant = { requests = "500/min", weight = 1 }   # every tenant's default plan
    tenants.acme = { weight = 3, requests = "1000/min" }   # a named tenant's own plan
    aimd = { decrease = 0.6, increase = 0.1, floor = 0.05 }  # reaction to 429s

    [scheduler]
    lanes = ["interactive", "batch"]   # priority lanes, highest first
    min_share = { batch = 0.1 }        # a lower lane's share of the quota while it waits
    default_lane = "interactive"
    publish_in_redis = true            # a release pushes its message in the same step

A tenant's plan caps its own share (its dimensions join every admission of its
requests) and weighs it against the other tenants when the group's quota is
contended (``docs/fair-scheduler.md``). A named plan replaces the default's weight
and those caps it names, and keeps the default's other caps.

Any key of a group that is not an option is a dimension; its name says what it counts
(``requests``, ``tokens``, ``input_tokens``, ``output_tokens``; ``requests_day`` and
``tokens_day`` count requests and tokens), or set ``counts`` in its table.

Environment overrides: ``LLM_THROTTLE_REDIS_URL``, ``LLM_THROTTLE_BROKER_URL``,
``LLM_THROTTLE_RESULT_BACKEND``, and ``LLM_THROTTLE__<section>__<key>=<value>`` for any
other key (the value is read as TOML when it parses, else as a string).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from threading import Lock
from typing import TYPE_CHECKING, Any

from throttle.errors import ConfigError, ThrottleError, UnknownGroupError
from throttle.limits import Aimd, Algorithm, Dimension, LimitGroup, parse_auto, parse_rate
from throttle.redis_url import check_deployment_urls

if TYPE_CHECKING:
    from throttle.providers.profile import Profile

CONFIG_ENV = "LLM_THROTTLE_CONFIG"
_ENV_SHORTCUTS = {
    "LLM_THROTTLE_REDIS_URL": ("redis", "url"),
    "LLM_THROTTLE_BROKER_URL": ("celery", "broker_url"),
    "LLM_THROTTLE_RESULT_BACKEND": ("celery", "result_backend"),
}
_ENV_PATH_PREFIX = "LLM_THROTTLE__"
#: What each standard dimension name counts.
COST_KINDS = ("requests", "tokens", "input_tokens", "output_tokens")
#: Where an ``auto`` limit starts, per minute, by what it counts: low enough for any
#: paid tier, so the first responses' headers (or AIMD, without headers) raise it.
_AUTO_START_PER_MIN = {
    "requests": 60.0,
    "tokens": 20_000.0,
    "input_tokens": 20_000.0,
    "output_tokens": 4_000.0,
}
_DIMENSION_KINDS = {
    "requests": "requests",
    "requests_day": "requests",
    "tokens": "tokens",
    "tokens_day": "tokens",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
}
_GROUP_OPTIONS = {
    "provider",
    "models",
    "concurrency",
    "headroom",
    "lease_ttl_s",
    "tenant",
    "tenants",
    "failure_policy",
    "aimd",
    "cold_start",
    "wire_margin_s",
    "default_max_tokens",
    "credentials",
}
_POLICIES = ("closed", "open")
_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
#: Per-tenant limit groups kept built in one process; the oldest is dropped past this,
#: so ten thousand tenants seen once cost no memory once they go idle.
LIMIT_GROUP_CACHE_SIZE = 2048


@dataclass(frozen=True)
class RedisSettings:
    url: str = "redis://127.0.0.1:6379/0"
    prefix: str = "llmt"
    #: "closed": tasks wait and retry while Redis is unreachable; "open": run unthrottled.
    failure_policy: str = "closed"
    socket_timeout_s: float = 5.0


@dataclass(frozen=True)
class CelerySettings:
    broker_url: str | None = None
    result_backend: str | None = None
    #: Queue for new completions; parked tasks come back on ``<queue>.released``.
    queue: str = "llm"
    #: Unacknowledged messages of a dead worker come back after this long. Waits longer
    #: than the hold horizon are parked (acknowledged), so this only has to exceed the
    #: hold horizon plus the longest provider call.
    visibility_timeout_s: float = 900.0
    result_expires_s: float = 86400.0


@dataclass(frozen=True)
class WorkerSettings:
    #: A slot nearer than this is slept on in the worker; a later one is parked.
    hold_horizon_s: float = 2.0
    #: At most this fraction of a worker's pool sleeps on slots at once; beyond, park.
    max_sleeping_fraction: float = 0.5
    #: Parked tasks go back to the broker this long before their slot (covers the hop
    #: through the broker; a released task sleeps at most about this long). A pass of
    #: the fair scheduler releases about 1 + 0.8 x lead x rate items: a longer lead
    #: means fewer passes (each costs Redis about as much as three releases; 0.1 s
    #: against 0.05 s took the backlog's Redis CPU per completion from 1.30x to 1.21x,
    #: bench/backlog_cost.py at 60/s), a shorter one a tighter priority order.
    release_lead_s: float = 0.1
    #: A released task no worker has claimed after this long (its dispatcher died, or
    #: its message was lost with a killed worker) is released again.
    release_stale_s: float = 30.0
    #: Per-task budget for throttle waits and 429 pauses, from enqueue.
    throttle_deadline_s: float = 3600.0
    #: Extra pause after a provider's Retry-After: uniform in [min, max] seconds.
    pause_jitter_min_s: float = 0.05
    pause_jitter_max_s: float = 0.25
    #: A provider asking to wait longer than this is treated as a terminal quota error.
    max_retry_after_s: float = 3600.0
    #: Error retries (transport errors, 5xx) per task; throttle waits never count.
    max_error_retries: int = 5
    #: The longest a dispatcher sleeps without being woken (a push that brings a pass
    #: forward, or a freed concurrency lease, wakes it at once).
    dispatcher_interval_s: float = 2.0


@dataclass(frozen=True)
class Lane:
    """A priority lane of the fair scheduler."""

    name: str
    #: The fraction of a contended quota this lane gets while it has work waiting,
    #: whatever the higher lanes want (0: strict priority).
    min_share: float = 0.0

    @property
    def credit_rate(self) -> float:
        """Credit earned per unit released from higher lanes: min_share / (1 - min_share),
        so that the lane's part of all releases is min_share."""
        return self.min_share / (1.0 - self.min_share)


@dataclass(frozen=True)
class SchedulerSettings:
    lanes: tuple[Lane, ...] = (Lane("interactive"), Lane("batch", 0.1))
    default_lane: str = "interactive"
    #: When the broker is a Redis on the limiter's server, queued items are stored as
    #: ready-made messages and the pass that releases one pushes it onto the broker's
    #: queue itself (no dispatcher publish, no claim). False: dispatchers publish.
    publish_in_redis: bool = True

    def lane(self, name: str | None) -> str:
        """A task's lane; ConfigError for one not configured."""
        if name is None:
            return self.default_lane
        if not any(lane.name == name for lane in self.lanes):
            known = ", ".join(lane.name for lane in self.lanes)
            raise ConfigError(f"unknown lane {name!r} (configured: {known})")
        return name


@dataclass(frozen=True)
class TenantPlan:
    """A tenant's share of a group: its weight among contending tenants and its caps."""

    weight: float = 1.0
    dimensions: tuple[Dimension, ...] = ()


@dataclass(frozen=True)
class ProviderSettings:
    name: str
    profile: str
    base_url: str
    credential: str | None = None
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 120.0
    #: How the output share of a request is counted: ``reserve``, ``settle`` or
    #: ``realtime`` (throttle.providers.accounting.OutputMode); None: the profile's.
    output_accounting: str | None = None
    #: The body field that carries the output limit (OpenAI-style profiles):
    #: ``max_tokens``, or ``max_completion_tokens`` for reasoning models; None: the
    #: profile's.
    max_tokens_field: str | None = None
    #: Azure's ``api-version``, Anthropic's ``anthropic-version``, Gemini's path version;
    #: None: the profile's.
    api_version: str | None = None
    #: Azure: the deployment that serves each model (default: the model's own name).
    deployments: Mapping[str, str] = field(default_factory=dict)

    def resolved_profile(self) -> Profile:
        """The provider's profile with this provider's settings."""
        return _resolved_profile(
            self.profile,
            self.output_accounting,
            self.max_tokens_field,
            self.api_version,
            tuple(sorted(self.deployments.items())),
        )


#: The values ``max_tokens_field`` may take.
MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens")


@functools.lru_cache(maxsize=64)
def _resolved_profile(
    name: str,
    output: str | None,
    max_tokens_field: str | None = None,
    api_version: str | None = None,
    deployments: tuple[tuple[str, str], ...] = (),
) -> Profile:
    """The named profile with a provider's settings; ValueError (naming the setting)
    for one the profile does not take."""
    from throttle.providers.registry import get_profile

    profile = get_profile(name)
    changes: dict[str, Any] = {}
    if output is not None:
        changes["accounting"] = profile.accounting.with_output(output)  # type: ignore[arg-type]
    wanted = {
        "max_tokens_field": max_tokens_field,
        "api_version": api_version,
        "deployments": dict(deployments) if deployments else None,
    }
    own = {f.name for f in fields(profile)}  # type: ignore[arg-type]
    for setting, value in wanted.items():
        if value is None:
            continue
        if setting not in own:
            raise ValueError(f"{setting}: the {name!r} profile has no such setting")
        changes[setting] = value
    if not changes:
        return profile
    return dataclasses.replace(profile, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class GroupSettings:
    name: str
    provider: str
    models: tuple[str, ...]
    dimensions: tuple[Dimension, ...]
    #: What each dimension counts: dimension name -> one of COST_KINDS.
    counts: Mapping[str, str]
    tenant_dimensions: tuple[Dimension, ...] = ()
    #: The default tenant plan's weight, and named tenants' own plans.
    tenant_weight: float = 1.0
    tenant_plans: Mapping[str, TenantPlan] = field(default_factory=dict)
    concurrency: int | None = None
    headroom: float = 0.02
    lease_ttl_s: float = 600.0
    failure_policy: str = "closed"
    aimd: Aimd = field(default_factory=Aimd)
    #: How full the buckets are before anything was heard from the provider.
    cold_start: float = 0.25
    #: How much longer than its window a sliding log keeps each entry (s); None: the
    #: default of throttle.limits.LimitGroup.window_ms.
    wire_margin_s: float | None = None
    #: The output limit of a request that names none (``enqueue`` without
    #: ``max_tokens``); None: requests must name one.
    default_max_tokens: int | None = None
    #: Credentials (API keys) with a quota each: every one gets its own buckets and
    #: learned limits, as limit group ``<name>@<credential>``; a task names one or the
    #: group picks (CompletionRunner). Empty: the provider's one credential.
    credentials: tuple[str, ...] = ()

    def limit_group_names(self) -> tuple[str, ...]:
        """The names of this group's limit groups: its own, or one per credential."""
        if not self.credentials:
            return (self.name,)
        return tuple(f"{self.name}@{credential}" for credential in self.credentials)


@dataclass
class Config:
    redis: RedisSettings = field(default_factory=RedisSettings)
    celery: CelerySettings = field(default_factory=CelerySettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    providers: dict[str, ProviderSettings] = field(default_factory=dict)
    groups: dict[str, GroupSettings] = field(default_factory=dict)
    #: The ``[gateway]`` table as written: the HTTP front door (``gateway/``) reads it.
    gateway: Mapping[str, Any] = field(default_factory=dict)
    _by_model: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)
    _limit_groups: dict[tuple[str, str | None], LimitGroup] = field(
        default_factory=dict, repr=False
    )
    _lock: Lock = field(default_factory=Lock, repr=False)

    @property
    def broker_url(self) -> str:
        return self.celery.broker_url or self.redis.url

    @property
    def result_backend(self) -> str:
        return self.celery.result_backend or self.broker_url

    def group_for(self, provider: str, model: str) -> GroupSettings:
        """The limit group that a (provider, model) pair runs under."""
        if provider not in self.providers:
            known = ", ".join(sorted(self.providers)) or "none"
            raise UnknownGroupError(f"unknown provider {provider!r} (configured: {known})")
        name = self._by_model.get((provider, model))
        if name is None:
            raise UnknownGroupError(
                f"no limit group covers model {model!r} of provider {provider!r};"
                " add it to a group's models"
            )
        return self.groups[name]

    def limit_group(
        self, group: GroupSettings, tenant: str | None = None, credential: str | None = None
    ) -> LimitGroup:
        """The LimitGroup one request passes: the group's limits plus its tenant's share;
        for a group with several ``credentials``, that credential's own (its name is
        ``<group>@<credential>``)."""
        own = tenant is not None and (group.tenant_dimensions or tenant in group.tenant_plans)
        name = group.name
        if group.credentials:
            if credential not in group.credentials:
                raise ConfigError(
                    f"group {group.name!r} runs on credentials {list(group.credentials)};"
                    f" not {credential!r}"
                )
            name = f"{group.name}@{credential}"
        key = (name, tenant if own else None)
        cached = self._limit_groups.get(key)
        if cached is not None:
            return cached
        dims = list(group.dimensions)
        if key[1] is not None:
            plan = group.tenant_plans.get(key[1])
            dims += [
                Dimension(
                    tenant_dimension(key[1], d.name),
                    d.capacity,
                    d.period_s,
                    d.algorithm,
                    d.timezone,
                )
                for d in (plan.dimensions if plan else group.tenant_dimensions)
            ]
        limit_group = LimitGroup(
            name,
            tuple(dims),
            group.concurrency,
            group.lease_ttl_s,
            group.headroom,
            group.aimd,
            group.cold_start,
            group.wire_margin_s,
        )
        with self._lock:
            if len(self._limit_groups) >= LIMIT_GROUP_CACHE_SIZE:  # idle tenants go first
                del self._limit_groups[next(iter(self._limit_groups))]
            self._limit_groups[key] = limit_group
        return limit_group

    def limit_group_named(self, name: str) -> tuple[GroupSettings, str | None] | None:
        """The group and credential of a limit group's name (see ``limit_group``),
        None for a name no configured group has."""
        base, _, credential = name.partition("@")
        group = self.groups.get(base)
        if group is None or (credential or None) not in (group.credentials or (None,)):
            return None
        return group, credential or None

    def limit_group_names(self) -> tuple[str, ...]:
        """Every limit group's name, per credential for a group with several."""
        return tuple(n for group in self.groups.values() for n in group.limit_group_names())

    def tenant_weight(self, group: GroupSettings, tenant: str | None) -> float:
        plan = group.tenant_plans.get(tenant) if tenant is not None else None
        return plan.weight if plan else group.tenant_weight

    def costs_for(
        self, group: GroupSettings, limit_group: LimitGroup, costs: Mapping[str, float]
    ) -> dict[str, float]:
        """Spread provider costs (by dimension name or kind) over a group's dimensions."""
        spread: dict[str, float] = {}
        for dim in limit_group.dimensions:
            kind = group.counts.get(_base_name(dim.name), _base_name(dim.name))
            value = costs.get(dim.name, costs.get(_base_name(dim.name), costs.get(kind, 0.0)))
            if value:
                spread[dim.name] = float(value)
        return spread


#: Tenant names up to this many characters once escaped are spelled out in their
#: dimension's name; longer ones are cut and end in a hash of the whole name.
_TENANT_NAME_MAX = 64


def tenant_dimension(tenant: str, dimension: str) -> str:
    """Name of a tenant's own dimension: ``tenant.<escaped tenant>.<dimension>``.

    The escape is one to one, so distinct tenants never share a bucket (``acme.com``
    and ``acme_com`` stay apart): ASCII letters, digits and ``-`` are kept, and every
    other UTF-8 byte, ``_`` and ``.`` included, is written ``_xx`` in hex. A name
    longer than 64 characters once escaped (or empty) keeps its first 46 and ends in
    ``_h`` (which no escape writes) and 16 hex digits of its SHA-256.
    """
    safe = "".join(
        chr(b) if chr(b).isascii() and (chr(b).isalnum() or b == 0x2D) else f"_{b:02x}"
        for b in tenant.encode("utf-8")
    )
    if len(safe) > _TENANT_NAME_MAX or not safe:
        digest = hashlib.sha256(tenant.encode("utf-8")).hexdigest()[:16]
        safe = f"{safe[: _TENANT_NAME_MAX - 18]}_h{digest}"
    return f"tenant.{safe}.{dimension}"


def _base_name(dimension: str) -> str:
    return dimension.rsplit(".", 1)[-1] if dimension.startswith("tenant.") else dimension


# -- loading ------------------------------------------------------------------------


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (or ``$LLM_THROTTLE_CONFIG``), apply environment overrides, validate."""
    env = os.environ if env is None else env
    path = path or env.get(CONFIG_ENV)
    raw: dict[str, Any] = {}
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
    return config_from_dict(apply_env_overrides(raw, env))


def apply_env_overrides(raw: dict[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in raw.items()}
    for var, (section, key) in _ENV_SHORTCUTS.items():
        if env.get(var):
            merged.setdefault(section, {})[key] = env[var]
    for var, value in env.items():
        if not var.startswith(_ENV_PATH_PREFIX):
            continue
        path = var[len(_ENV_PATH_PREFIX) :].split("__")
        if len(path) < 2 or not all(path):
            raise ConfigError(f"{var}: expected {_ENV_PATH_PREFIX}<section>__<key>")
        target = merged
        for part in path[:-1]:
            nxt = target.setdefault(part, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"{var}: {part!r} is not a table")
            target = nxt
        target[path[-1]] = _env_value(value)
    return merged


def _env_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _section(cls: type[Any], raw: Any, where: str) -> Any:
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    defaults = cls()
    values = {}
    for key, value in raw.items():
        expected = type(getattr(defaults, key))
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if getattr(defaults, key) is not None and not isinstance(value, expected):
            raise ConfigError(f"{where}.{key}: expected {expected.__name__}, got {value!r}")
        values[key] = value
    return cls(**values)


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """Validate a parsed TOML document; every error names the offending key."""
    sections = {"redis", "celery", "worker", "scheduler", "providers", "groups", "gateway"}
    unknown = sorted(set(raw) - sections)
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}")
    redis_settings: RedisSettings = _section(RedisSettings, raw.get("redis"), "redis")
    if redis_settings.failure_policy not in _POLICIES:
        raise ConfigError(f"redis.failure_policy: expected one of {_POLICIES}")
    worker: WorkerSettings = _section(WorkerSettings, raw.get("worker"), "worker")
    if worker.hold_horizon_s < 0 or worker.throttle_deadline_s <= 0:
        raise ConfigError("worker: hold_horizon_s must be >= 0 and throttle_deadline_s > 0")
    if worker.release_stale_s <= worker.release_lead_s:
        raise ConfigError("worker: release_stale_s must exceed release_lead_s")
    if not 0 <= worker.pause_jitter_min_s <= worker.pause_jitter_max_s:
        raise ConfigError("worker: need 0 <= pause_jitter_min_s <= pause_jitter_max_s")
    config = Config(
        redis=redis_settings,
        celery=_section(CelerySettings, raw.get("celery"), "celery"),
        worker=worker,
        scheduler=_scheduler(raw.get("scheduler")),
        gateway=_table(raw.get("gateway"), "gateway"),
    )
    check_deployment_urls(config.redis.url, config.broker_url, config.result_backend)
    for name, spec in _table(raw.get("providers"), "providers").items():
        config.providers[name] = _provider(name, spec)
    for name, spec in _table(raw.get("groups"), "groups").items():
        group = _group(name, spec, config.providers, redis_settings.failure_policy)
        config.groups[name] = group
        for model in group.models:
            owner = config._by_model.setdefault((group.provider, model), name)
            if owner != name:
                raise ConfigError(
                    f"groups.{name}.models: {model!r} of {group.provider!r} is already in {owner!r}"
                )
    return config


_LANE_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,32}$")


def _scheduler(raw: Any) -> SchedulerSettings:
    spec = _table(raw, "scheduler")
    unknown = sorted(set(spec) - {"lanes", "min_share", "default_lane", "publish_in_redis"})
    if unknown:
        raise ConfigError(
            f"scheduler: unknown key(s) {unknown};"
            " known: default_lane, lanes, min_share, publish_in_redis"
        )
    publish_in_redis = spec.get("publish_in_redis", True)
    if not isinstance(publish_in_redis, bool):
        raise ConfigError("scheduler.publish_in_redis: expected true or false")
    names = spec.get("lanes", ["interactive", "batch"])
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise ConfigError("scheduler.lanes: expected a non-empty list of lane names")
    bad = [n for n in names if not _LANE_NAME.match(n)]
    if bad or len(set(names)) != len(names):
        raise ConfigError(
            f"scheduler.lanes: names must be distinct, 1-32 of letters, digits, _ . - ({names!r})"
        )
    shares = _table(
        spec.get("min_share", {"batch": 0.1} if "lanes" not in spec else {}), "scheduler.min_share"
    )
    lanes = []
    for k, name in enumerate(names):
        share = shares.pop(name, 0.0)
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 <= share < 1:
            raise ConfigError(f"scheduler.min_share.{name}: expected a number in [0, 1)")
        if k == 0 and share:
            raise ConfigError(f"scheduler.min_share.{name}: the highest lane needs no share")
        lanes.append(Lane(name, float(share)))
    if shares:
        raise ConfigError(f"scheduler.min_share: no such lane(s) {sorted(shares)}")
    if sum(lane.min_share for lane in lanes) >= 1:
        raise ConfigError("scheduler.min_share: the shares must add up to less than 1")
    default = spec.get("default_lane", names[0])
    if not isinstance(default, str) or default not in names:
        raise ConfigError(f"scheduler.default_lane: {default!r} is not in scheduler.lanes")
    return SchedulerSettings(tuple(lanes), default, publish_in_redis)


def _tenant_plan(
    where: str, spec: Any, counts: dict[str, str], base: tuple[Dimension, ...] = ()
) -> TenantPlan:
    table = dict(_table(spec, where))
    weight = table.pop("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        raise ConfigError(f"{where}.weight: expected a positive number, got {weight!r}")
    dims = {d.name: d for d in base}
    for key, value in table.items():
        dim, kind = _dimension(where, key, value)
        if dim.auto:  # providers report no per-tenant limits to learn from
            raise ConfigError(f"{where}.{key}: a tenant's share needs a number, not auto")
        dims[key] = dim
        counts[key] = kind
    return TenantPlan(float(weight), tuple(dims.values()))


def _table(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table")
    return value


def _optional_seconds(spec: Mapping[str, Any], name: str, where: str) -> float | None:
    value = spec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ConfigError(f"{where}.{name}: expected a number of seconds >= 0, got {value!r}")
    return float(value)


def _credentials(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not (isinstance(value, list) and value and all(isinstance(c, str) for c in value)):
        raise ConfigError(f"{where}.credentials: expected a non-empty list of credential names")
    bad = [c for c in value if not _CREDENTIAL_NAME.match(c)]
    if bad or len(set(value)) != len(value):
        raise ConfigError(
            f"{where}.credentials: names of letters, digits, _ . -, each once (got {value})"
        )
    return tuple(value)


def _optional_positive_int(spec: Mapping[str, Any], name: str, where: str) -> int | None:
    value = spec.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}.{name}: expected a positive integer, got {value!r}")
    return value


def _output_accounting(where: str, spec: Any) -> str | None:
    from throttle.providers.accounting import OUTPUT_MODES

    if not isinstance(spec, dict):
        raise ConfigError(f'{where}.accounting: expected a table, e.g. {{ output = "settle" }}')
    unknown = sorted(set(spec) - {"output"})
    if unknown:
        raise ConfigError(f"{where}.accounting: unknown key(s) {unknown}; known: ['output']")
    mode = spec.get("output")
    if mode is not None and mode not in OUTPUT_MODES:
        raise ConfigError(f"{where}.accounting.output: expected one of {list(OUTPUT_MODES)}")
    return mode


def _provider(name: str, spec: Any) -> ProviderSettings:
    where = f"providers.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a table")
    from throttle.providers.registry import get_profile  # providers import config-free code

    values = dict(spec)
    values.setdefault("profile", name)
    try:
        get_profile(str(values["profile"]))
    except ThrottleError as exc:
        raise ConfigError(f"{where}.profile: {exc}") from exc
    if "accounting" in values:
        values["output_accounting"] = _output_accounting(where, values.pop("accounting"))
        try:
            _resolved_profile(str(values["profile"]), values["output_accounting"])
        except ValueError as exc:
            raise ConfigError(f"{where}.accounting: {exc}") from exc
    elif "output_accounting" in values:
        raise ConfigError(f'{where}: write accounting = {{ output = "..." }}')
    for key in ("max_tokens_field", "api_version"):
        if key in values and not (isinstance(values[key], str) and values[key]):
            raise ConfigError(f"{where}.{key}: expected a non-empty string")
    if values.get("max_tokens_field", MAX_TOKENS_FIELDS[0]) not in MAX_TOKENS_FIELDS:
        raise ConfigError(f"{where}.max_tokens_field: one of {', '.join(MAX_TOKENS_FIELDS)}")
    if "deployments" in values:
        deployments = _table(values["deployments"], f"{where}.deployments")
        if not all(isinstance(v, str) and v for v in deployments.values()):
            raise ConfigError(f'{where}.deployments: model = "deployment name" pairs')
        values["deployments"] = dict(deployments)
    try:
        _resolved_profile(
            str(values["profile"]),
            values.get("output_accounting"),
            values.get("max_tokens_field"),
            values.get("api_version"),
            tuple(sorted(values.get("deployments", {}).items())),
        )
    except ValueError as exc:
        raise ConfigError(f"{where}.{exc}") from exc
    if "base_url" not in values:
        raise ConfigError(f"{where}.base_url is required")
    allowed = {f.name for f in fields(ProviderSettings)} - {"name"}
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(allowed)}")
    for key in ("connect_timeout_s", "read_timeout_s"):
        if key in values and not (isinstance(values[key], int | float) and values[key] > 0):
            raise ConfigError(f"{where}.{key}: expected a positive number")
    return ProviderSettings(name=name, **values)


def _auto_dimension(name: str, period_s: float, counts: str | None, start: Any) -> Dimension:
    """An ``auto`` limit: it starts at ``start`` (a spec such as ``"100/min"``) or at a
    conservative default for what it counts, scaled to its period."""
    if start is None:
        if counts not in _AUTO_START_PER_MIN:
            raise ConfigError("an auto limit needs counts = ... or a start such as '100/min'")
        capacity = _AUTO_START_PER_MIN[counts] * period_s / 60.0
    else:
        rate, _zone = parse_rate(str(start))
        capacity = rate.capacity * period_s / rate.period_s
    return Dimension(name, capacity, period_s, auto=True)


def _dimension(where: str, name: str, spec: Any) -> tuple[Dimension, str]:
    try:
        if isinstance(spec, str):
            counts = _DIMENSION_KINDS.get(name)
            auto_period_s = parse_auto(spec)
            if auto_period_s is None:
                dim = Dimension.parse(name, spec)
            else:
                dim = _auto_dimension(name, auto_period_s, counts, None)
        elif isinstance(spec, dict):
            extra = sorted(set(spec) - {"limit", "algorithm", "timezone", "counts", "start"})
            if extra or "limit" not in spec:
                raise ConfigError(
                    f"{where}.{name}: a table needs 'limit' and may have algorithm, timezone,"
                    f" counts, start (got {sorted(spec)})"
                )
            auto_period_s = parse_auto(str(spec["limit"]))
            if auto_period_s is not None:
                if spec.get("algorithm", "gcra") != "gcra" or spec.get("timezone"):
                    raise ConfigError(f"{where}.{name}: auto limits use the gcra algorithm")
                counts = spec.get("counts", _DIMENSION_KINDS.get(name))
                dim = _auto_dimension(name, auto_period_s, counts, spec.get("start"))
                return _checked_counts(where, name, dim, counts)
            if "start" in spec:
                raise ConfigError(f"{where}.{name}: 'start' is for auto limits only")
            algorithm = spec.get("algorithm")
            if spec.get("timezone") and algorithm is None:
                algorithm = Algorithm.CALENDAR
            dim = Dimension.parse(name, str(spec["limit"]), algorithm)
            if spec.get("timezone"):
                dim = Dimension(name, dim.capacity, dim.period_s, dim.algorithm, spec["timezone"])
            counts = spec.get("counts", _DIMENSION_KINDS.get(name))
        else:
            raise ConfigError(f"{where}.{name}: expected a limit such as '500/min' or a table")
    except ConfigError as exc:
        message = str(exc)
        raise ConfigError(
            message if message.startswith(where) else f"{where}.{name}: {exc}"
        ) from exc
    return _checked_counts(where, name, dim, counts)


def _checked_counts(
    where: str, name: str, dim: Dimension, counts: str | None
) -> tuple[Dimension, str]:
    if counts not in COST_KINDS:
        raise ConfigError(
            f"{where}.{name}: cannot tell what it counts; name it one of"
            f" {sorted(_DIMENSION_KINDS)} or set counts = one of {COST_KINDS}"
        )
    return dim, counts


def _group(
    name: str, spec: Any, providers: Mapping[str, ProviderSettings], default_policy: str
) -> GroupSettings:
    where = f"groups.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: expected a table")
    if "@" in name:
        raise ConfigError(f"{where}: '@' is kept for credentials' groups (<group>@<credential>)")
    provider = spec.get("provider")
    if not isinstance(provider, str) or provider not in providers:
        raise ConfigError(f"{where}.provider: {provider!r} is not under [providers]")
    models = spec.get("models")
    if not (isinstance(models, list) and models and all(isinstance(m, str) for m in models)):
        raise ConfigError(f"{where}.models: expected a non-empty list of model names")
    dims, counts = [], {}
    for key, value in spec.items():
        if key in _GROUP_OPTIONS:
            continue
        dim, kind = _dimension(where, key, value)
        dims.append(dim)
        counts[key] = kind
    default_plan = _tenant_plan(f"{where}.tenant", spec.get("tenant"), counts)
    plans = {
        tenant: _tenant_plan(f"{where}.tenants.{tenant}", plan, counts, default_plan.dimensions)
        for tenant, plan in _table(spec.get("tenants"), f"{where}.tenants").items()
    }
    policy = spec.get("failure_policy", default_policy)
    if policy not in _POLICIES:
        raise ConfigError(f"{where}.failure_policy: expected one of {_POLICIES}")
    aimd_spec = _table(spec.get("aimd"), f"{where}.aimd")
    try:
        aimd = Aimd(**{k: float(v) for k, v in aimd_spec.items()})
    except TypeError as exc:
        raise ConfigError(f"{where}.aimd: use decrease, increase, floor ({exc})") from exc
    except (ConfigError, ValueError) as exc:
        raise ConfigError(f"{where}.aimd: {exc}") from exc
    concurrency = spec.get("concurrency")
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise ConfigError(f"{where}.concurrency: expected a positive integer")
    group = GroupSettings(
        name=name,
        provider=provider,
        models=tuple(models),
        dimensions=tuple(dims),
        counts=counts,
        tenant_dimensions=default_plan.dimensions,
        tenant_weight=default_plan.weight,
        tenant_plans=plans,
        concurrency=concurrency,
        headroom=float(spec.get("headroom", 0.02)),
        lease_ttl_s=float(spec.get("lease_ttl_s", 600.0)),
        failure_policy=policy,
        aimd=aimd,
        cold_start=float(spec.get("cold_start", 0.25)),
        wire_margin_s=_optional_seconds(spec, "wire_margin_s", where),
        default_max_tokens=_optional_positive_int(spec, "default_max_tokens", where),
        credentials=_credentials(spec.get("credentials"), where),
    )
    try:  # validate the whole group once
        LimitGroup(
            name,
            group.dimensions,
            group.concurrency,
            group.lease_ttl_s,
            group.headroom,
            group.aimd,
            group.cold_start,
            group.wire_margin_s,
        )
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return group
