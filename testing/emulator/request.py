"""A completion request as the routes hand it to the engine, and the API key it carries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from testing.emulator.kinds import Profile

#: Azure's ``api-version`` when the query gives none.
DEFAULT_API_VERSION = "2024-08-01-preview"


@dataclass(frozen=True)
class CompletionRequest:
    """A completion call as the routes deliver it. Header names are lower-case."""

    profile: Profile
    headers: Mapping[str, str]
    body: bytes
    #: Model (Gemini) or deployment (Azure) taken from the path.
    path_model: str | None = None
    api_version: str = DEFAULT_API_VERSION
    #: Gemini's ``?key=`` query parameter.
    query_key: str | None = None


def api_key_of(request: CompletionRequest) -> str:
    """The caller's API key from whichever header its provider uses; else ``anonymous``."""
    headers = request.headers
    auth = headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    for name in ("x-api-key", "api-key", "x-goog-api-key"):
        if name in headers:
            return headers[name]
    return request.query_key or "anonymous"
