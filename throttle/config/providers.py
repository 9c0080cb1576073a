"""The ``[providers.<name>]`` tables: each provider's profile, endpoint and settings."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from throttle.config.checks import table
from throttle.config.profile import MAX_TOKENS_FIELDS, resolved_profile
from throttle.config.settings import ProviderSettings
from throttle.errors import ConfigError, ThrottleError


def _output_accounting(where: str, spec: Any) -> str | None:
    """The output mode of an ``accounting = { output = "..." }`` table (None: the
    profile's)."""
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


def provider_settings(name: str, spec: Any) -> ProviderSettings:
    """The provider ``name`` from its table; its profile (by default the one of the
    same name) must take every setting it gives."""
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
            resolved_profile(str(values["profile"]), values["output_accounting"])
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
        deployments = table(values["deployments"], f"{where}.deployments")
        if not all(isinstance(v, str) and v for v in deployments.values()):
            raise ConfigError(f'{where}.deployments: model = "deployment name" pairs')
        values["deployments"] = dict(deployments)
    try:
        resolved_profile(
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
