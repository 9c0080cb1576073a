"""The settings of each section, as frozen dataclasses with their defaults.

Times are in seconds (``_s``), fractions in [0, 1]; parsing and checking them is
the job of the sibling modules (``sections``, ``providers``, ``groups``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from throttle.config.profile import resolved_profile
from throttle.errors import ConfigError
from throttle.limits import Aimd, Dimension, LimitGroup

if TYPE_CHECKING:
    from throttle.providers.profile import Profile

#: The values ``failure_policy`` may take, in ``[redis]`` and in a group.
FAILURE_POLICIES = ("closed", "open")


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
        return resolved_profile(
            self.profile,
            self.output_accounting,
            self.max_tokens_field,
            self.api_version,
            tuple(sorted(self.deployments.items())),
        )


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

    def to_limit_group(
        self, name: str | None = None, dimensions: tuple[Dimension, ...] | None = None
    ) -> LimitGroup:
        """A LimitGroup with this group's options, named ``name`` (default: the group's)
        over ``dimensions`` (default: the group's own); ConfigError for a bad one."""
        return LimitGroup(
            self.name if name is None else name,
            self.dimensions if dimensions is None else dimensions,
            self.concurrency,
            self.lease_ttl_s,
            self.headroom,
            self.aimd,
            self.cold_start,
            self.wire_margin_s,
        )
