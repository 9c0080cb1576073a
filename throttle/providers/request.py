"""A provider HTTP request as plain data, built by a profile and sent by the client.

The API key travels in :attr:`HttpRequest.auth` as a :class:`~.credentials.Secret`, so
printing, logging or ``repr``-ing a request never shows it; only
:meth:`HttpRequest.wire_headers`, called as the bytes go out, reveals it. The JSON body
(the prompt) is left out of the ``repr`` as well.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from throttle.errors import InvalidRequestError
from throttle.providers.credentials import Secret

#: A chat message as callers write it (OpenAI shape): ``{"role": ..., "content": ...}``.
Message = Mapping[str, object]


@dataclass(frozen=True)
class AuthHeader:
    """``name: scheme + key``, e.g. ``Authorization: Bearer <key>`` or ``x-api-key: <key>``."""

    name: str
    key: Secret
    scheme: str = ""

    def value(self) -> str:
        return self.scheme + self.key.reveal()


@dataclass(frozen=True)
class HttpRequest:
    """Method, URL, non-secret headers, JSON body and the (masked) auth header."""

    method: str
    url: str
    headers: Mapping[str, str]
    json: Mapping[str, object] = field(repr=False)
    auth: AuthHeader | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "headers", MappingProxyType(dict(self.headers)))

    def wire_headers(self) -> dict[str, str]:
        """Every header to send, the revealed key included. Do not log the result."""
        headers = dict(self.headers)
        if self.auth is not None:
            headers[self.auth.name] = self.auth.value()
        return headers


def join_url(base_url: str, path: str) -> str:
    """``base_url`` (scheme, host, optional prefix; no ``/v1``) joined to ``path``."""
    if not base_url.startswith(("http://", "https://")):
        raise InvalidRequestError(f"base URL must start with http:// or https://: {base_url!r}")
    return base_url.rstrip("/") + "/" + path.lstrip("/")


def check_chat(messages: Sequence[Message], max_tokens: int) -> None:
    """Reject malformed requests before any admission. Messages never enter the error."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequestError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence) or not messages:
        raise InvalidRequestError("messages must be a non-empty list of {role, content}")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InvalidRequestError(f"messages[{index}] must be a mapping with a 'role'")
        content = message.get("content")
        if not isinstance(content, str | list):
            raise InvalidRequestError(f"messages[{index}].content must be a string or a list")


def message_text(message: Message) -> str:
    """The text of a message: its string content, or its text parts joined."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return ""
