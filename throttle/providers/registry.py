"""Profiles by name: ``get_profile("openai")``.

=====================  ===========================================================
name (aliases)         profile
=====================  ===========================================================
``openai``             OpenAI chat completions
``azure``              Azure OpenAI (``azure-openai``); deployment = model name
``anthropic``          Anthropic Messages (``claude``)
``gemini``             Google Gemini generateContent (``google``)
``openai-compatible``  any OpenAI-compatible server, no key required (``vllm``)
``groq``               Groq (RPD in the request headers)
``together``           Together AI
``openrouter``         OpenRouter
=====================  ===========================================================

Profiles are frozen; to change one (an Azure ``api_version``, deployment names),
build it directly or :func:`register_profile` a copy made with
:func:`dataclasses.replace`.
"""

from __future__ import annotations

import threading

from throttle.errors import ConfigError, UnknownGroupError
from throttle.providers.anthropic import AnthropicProfile
from throttle.providers.gemini import GeminiProfile
from throttle.providers.openai import (
    AzureOpenAIProfile,
    OpenAIProfile,
    compatible_profile,
    groq_profile,
)
from throttle.providers.profile import Profile

_ALIASES: dict[str, str] = {
    "azure-openai": "azure",
    "claude": "anthropic",
    "google": "gemini",
    "vllm": "openai-compatible",
    "compatible": "openai-compatible",
}

_lock = threading.Lock()
_profiles: dict[str, Profile] = {
    "openai": OpenAIProfile(),
    "azure": AzureOpenAIProfile(),
    "anthropic": AnthropicProfile(),
    "gemini": GeminiProfile(),
    "openai-compatible": compatible_profile("openai-compatible"),
    "groq": groq_profile(),
    "together": compatible_profile(
        "together", default_base_url="https://api.together.xyz", requires_key=True
    ),
    "openrouter": compatible_profile(
        "openrouter", default_base_url="https://openrouter.ai/api", requires_key=True
    ),
}


def _normalise(name: str) -> str:
    key = name.strip().lower()
    return _ALIASES.get(key, key)


def get_profile(name: str) -> Profile:
    """The profile registered as ``name`` (or an alias); UnknownGroupError otherwise."""
    if not isinstance(name, str):
        raise UnknownGroupError(f"provider profile name must be a string, got {name!r}")
    with _lock:
        profile = _profiles.get(_normalise(name))
        known = sorted(_profiles)
    if profile is None:
        raise UnknownGroupError(f"unknown provider profile {name!r}; known: {', '.join(known)}")
    return profile


def register_profile(profile: Profile, *, replace: bool = False) -> None:
    """Make ``profile`` available under ``profile.name``."""
    key = _normalise(profile.name)
    with _lock:
        if key in _profiles and not replace:
            raise ConfigError(f"provider profile {profile.name!r} is already registered")
        _profiles[key] = profile


def profile_names() -> tuple[str, ...]:
    with _lock:
        return tuple(sorted(_profiles))
