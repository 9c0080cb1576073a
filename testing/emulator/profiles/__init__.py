"""Wire formats of the emulated providers, one module per provider."""

from __future__ import annotations

from collections.abc import Mapping

from testing.emulator.kinds import Profile
from testing.emulator.profiles.anthropic import AnthropicRules
from testing.emulator.profiles.azure import AzureRules
from testing.emulator.profiles.base import DimSnapshot, ProfileRules
from testing.emulator.profiles.gemini import GeminiRules
from testing.emulator.profiles.openai import OpenAIRules

__all__ = ["DimSnapshot", "ProfileRules", "all_rules"]


def all_rules() -> Mapping[Profile, ProfileRules]:
    """One rules object per profile."""
    return {
        Profile.OPENAI: OpenAIRules(),
        Profile.ANTHROPIC: AnthropicRules(),
        Profile.AZURE: AzureRules(),
        Profile.GEMINI: GeminiRules(),
    }
