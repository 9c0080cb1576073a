"""The ``[groups.<name>]`` tables: a group's models, dimensions, tenants and options."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from throttle.config.checks import optional_positive_int, optional_seconds, table
from throttle.config.dimensions import dimension, tenant_plan
from throttle.config.settings import FAILURE_POLICIES, GroupSettings, ProviderSettings
from throttle.errors import ConfigError
from throttle.limits import Aimd

#: A group's keys that are options; any other key is a dimension.
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
_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def group_settings(
    name: str, spec: Any, providers: Mapping[str, ProviderSettings], default_policy: str
) -> GroupSettings:
    """The group ``name`` from its table; its provider must be in ``providers``, and
    its ``failure_policy`` defaults to ``default_policy`` (``[redis]``'s)."""
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
        dim, kind = dimension(where, key, value)
        dims.append(dim)
        counts[key] = kind
    default_plan = tenant_plan(f"{where}.tenant", spec.get("tenant"), counts)
    plans = {
        tenant: tenant_plan(f"{where}.tenants.{tenant}", plan, counts, default_plan.dimensions)
        for tenant, plan in table(spec.get("tenants"), f"{where}.tenants").items()
    }
    policy = spec.get("failure_policy", default_policy)
    if policy not in FAILURE_POLICIES:
        raise ConfigError(f"{where}.failure_policy: expected one of {FAILURE_POLICIES}")
    aimd_spec = table(spec.get("aimd"), f"{where}.aimd")
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
        wire_margin_s=optional_seconds(spec, "wire_margin_s", where),
        default_max_tokens=optional_positive_int(spec, "default_max_tokens", where),
        credentials=_credentials(spec.get("credentials"), where),
    )
    try:  # validate the whole group once
        group.to_limit_group()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return group


def _credentials(value: Any, where: str) -> tuple[str, ...]:
    """A group's ``credentials``: distinct names, or () when absent."""
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
