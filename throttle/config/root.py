"""The loaded configuration, and what the runtime asks of it.

:class:`Config` holds every section's settings and answers: which group a
(provider, model) runs under, the :class:`~throttle.limits.LimitGroup` one request
passes (with its tenant's share and its credential), and how a request's costs
spread over that group's dimensions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from threading import Lock
from typing import Any

from throttle.config.settings import (
    CelerySettings,
    GroupSettings,
    ProviderSettings,
    RedisSettings,
    SchedulerSettings,
    WorkerSettings,
)
from throttle.config.tenants import base_name, tenant_dimension
from throttle.errors import ConfigError, UnknownGroupError
from throttle.limits import Dimension, LimitGroup

#: Per-tenant limit groups kept built in one process; the oldest is dropped past this,
#: so ten thousand tenants seen once cost no memory once they go idle.
LIMIT_GROUP_CACHE_SIZE = 2048


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
        limit_group = group.to_limit_group(name, tuple(dims))
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
            kind = group.counts.get(base_name(dim.name), base_name(dim.name))
            value = costs.get(dim.name, costs.get(base_name(dim.name), costs.get(kind, 0.0)))
            if value:
                spread[dim.name] = float(value)
        return spread
