"""Loading: a TOML file and the environment's overrides, validated into a Config."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from throttle.config.checks import table
from throttle.config.groups import group_settings
from throttle.config.providers import provider_settings
from throttle.config.root import Config
from throttle.config.sections import (
    celery_settings,
    redis_settings,
    scheduler_settings,
    worker_settings,
)
from throttle.errors import ConfigError
from throttle.redis_url import check_deployment_urls

CONFIG_ENV = "LLM_THROTTLE_CONFIG"
_ENV_SHORTCUTS = {
    "LLM_THROTTLE_REDIS_URL": ("redis", "url"),
    "LLM_THROTTLE_BROKER_URL": ("celery", "broker_url"),
    "LLM_THROTTLE_RESULT_BACKEND": ("celery", "result_backend"),
}
_ENV_PATH_PREFIX = "LLM_THROTTLE__"
_SECTIONS = {"redis", "celery", "worker", "scheduler", "providers", "groups", "gateway"}


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
    """``raw`` with the environment's overrides: the shortcuts (``LLM_THROTTLE_REDIS_URL``
    ...) and ``LLM_THROTTLE__<section>__<key>=<value>`` (read as TOML when it parses,
    else as a string). ``raw``'s sections are copied, not changed."""
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


def config_from_dict(raw: Mapping[str, Any]) -> Config:
    """Validate a parsed TOML document; every error names the offending key."""
    unknown = sorted(set(raw) - _SECTIONS)
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}")
    redis = redis_settings(raw.get("redis"))
    worker = worker_settings(raw.get("worker"))
    config = Config(
        redis=redis,
        celery=celery_settings(raw.get("celery")),
        worker=worker,
        scheduler=scheduler_settings(raw.get("scheduler")),
        gateway=table(raw.get("gateway"), "gateway"),
    )
    check_deployment_urls(config.redis.url, config.broker_url, config.result_backend)
    for name, spec in table(raw.get("providers"), "providers").items():
        config.providers[name] = provider_settings(name, spec)
    for name, spec in table(raw.get("groups"), "groups").items():
        group = group_settings(name, spec, config.providers, redis.failure_policy)
        config.groups[name] = group
        for model in group.models:
            owner = config._by_model.setdefault((group.provider, model), name)
            if owner != name:
                raise ConfigError(
                    f"groups.{name}.models: {model!r} of {group.provider!r} is already in {owner!r}"
                )
    return config
