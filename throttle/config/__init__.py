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

The package's modules, one job each: ``settings`` (the dataclasses), ``root``
(:class:`Config` and its lookups), ``load`` (file, environment, validation of the whole),
``sections``, ``providers``, ``groups`` and ``dimensions`` (each part's parsing),
``checks`` (shared value checks), ``profile`` and ``tenants``. Import from
``throttle.config``: the names below are its interface.
"""

from __future__ import annotations

from throttle.config.dimensions import COST_KINDS
from throttle.config.load import CONFIG_ENV, apply_env_overrides, config_from_dict, load_config
from throttle.config.profile import MAX_TOKENS_FIELDS
from throttle.config.root import LIMIT_GROUP_CACHE_SIZE, Config
from throttle.config.settings import (
    CelerySettings,
    GroupSettings,
    Lane,
    ProviderSettings,
    RedisSettings,
    SchedulerSettings,
    TenantPlan,
    WorkerSettings,
)
from throttle.config.tenants import tenant_dimension

__all__ = [
    "CONFIG_ENV",
    "COST_KINDS",
    "LIMIT_GROUP_CACHE_SIZE",
    "MAX_TOKENS_FIELDS",
    "CelerySettings",
    "Config",
    "GroupSettings",
    "Lane",
    "ProviderSettings",
    "RedisSettings",
    "SchedulerSettings",
    "TenantPlan",
    "WorkerSettings",
    "apply_env_overrides",
    "config_from_dict",
    "load_config",
    "tenant_dimension",
]
