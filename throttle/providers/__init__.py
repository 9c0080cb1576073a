"""The provider layer: speak each LLM API, read its limit signals, classify its errors.

Modules, one job each:

=================  ===============================================================
``durations``      Go / protobuf durations, retry-after, RFC 3339 and HTTP dates
``observation``    :class:`Observation`: one response's limit signals, normalised
``headers``        per-provider header parsers into an observation
``errorbody``      the facts inside an error body, whatever its shape
``classify``       (status, headers, body) -> a typed :mod:`throttle.errors` error
``usage``          reported usage, normalised to input/output tokens
``accounting``     admission costs and settlement deltas, the provider's way
``request``        :class:`HttpRequest`, with the key masked
``credentials``    :class:`Secret` and credential lookup on the worker
``profile``        the :class:`Profile` contract
``openai``         OpenAI, Azure OpenAI, OpenAI-compatible (vLLM, Groq...) profiles
``anthropic``      Anthropic Messages profile
``gemini``         Google Gemini profile
``registry``       :func:`get_profile` by name
``tokens``         offline, self-calibrating token estimation
``client``         :class:`ProviderClient`: pooled HTTP, transport retries, typed errors
=================  ===============================================================
"""

from __future__ import annotations

from throttle.providers.accounting import Reservation, rejected_deltas, restrict
from throttle.providers.classify import ClassifyPolicy, classify_response
from throttle.providers.client import ProviderClient, ProviderResponse, Timeouts, TransportRetry
from throttle.providers.credentials import Secret, load_credential
from throttle.providers.observation import DimensionState, Observation
from throttle.providers.profile import Profile
from throttle.providers.registry import get_profile, profile_names, register_profile
from throttle.providers.request import HttpRequest
from throttle.providers.tokens import TokenEstimator
from throttle.providers.usage import Usage

__all__ = [
    "ClassifyPolicy",
    "DimensionState",
    "HttpRequest",
    "Observation",
    "Profile",
    "ProviderClient",
    "ProviderResponse",
    "Reservation",
    "Secret",
    "Timeouts",
    "TokenEstimator",
    "TransportRetry",
    "Usage",
    "classify_response",
    "get_profile",
    "load_credential",
    "profile_names",
    "register_profile",
    "rejected_deltas",
    "restrict",
]
