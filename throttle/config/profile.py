"""A provider's profile with that provider's settings applied, built once per setting."""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from throttle.providers.profile import Profile

#: The values ``max_tokens_field`` may take.
MAX_TOKENS_FIELDS = ("max_tokens", "max_completion_tokens")


@functools.lru_cache(maxsize=64)
def resolved_profile(
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
