"""API keys: looked up on the worker by credential *name*, held in a masked :class:`Secret`.

Task messages carry a credential name such as ``"openai-prod"``, never a key
(DESIGN principle 11). The worker resolves the name, in this order:

1. the environment variable ``LLM_THROTTLE_KEY_<NAME>``, where ``<NAME>`` is the
   credential name upper-cased with every character outside ``A-Z0-9`` turned into
   ``_`` (``openai-prod`` -> ``LLM_THROTTLE_KEY_OPENAI_PROD``);
2. the secrets file named by ``LLM_THROTTLE_SECRETS_FILE``: one ``name = key`` per
   line; blank lines and lines starting with ``#`` are ignored; whitespace around
   the name and the key is stripped; the first line for a name wins. Keep the file
   mode 0600.

A missing credential raises :class:`~throttle.errors.ConfigError` naming the
credential and where it was looked for, never any key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NoReturn

from throttle.errors import ConfigError

ENV_PREFIX = "LLM_THROTTLE_KEY_"
SECRETS_FILE_ENV = "LLM_THROTTLE_SECRETS_FILE"
MASK = "****"

_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")

#: Shapes of well-known API keys, masked wherever they appear in provider text.
_KEY_LIKE = re.compile(
    r"\b(?:sk-[A-Za-z0-9_\-*]{6,}|sk-ant-[A-Za-z0-9_\-*]{6,}|AIza[0-9A-Za-z_\-]{20,}"
    r"|gsk_[A-Za-z0-9]{10,}|Bearer\s+\S+)"
)


class Secret:
    """A string that never shows itself: ``repr``, ``str`` and ``format`` are masked.

    Call :meth:`reveal` at the last moment (when writing the HTTP header). Pickling is
    refused so a key cannot slip into a Celery message or a result backend.

    >>> key = Secret("sk-live-123")
    >>> key, str(key), f"{key}"
    (Secret('****'), '****', '****')
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ConfigError("a secret must be a non-empty string")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __reduce__(self) -> NoReturn:
        raise TypeError("Secret cannot be pickled; pass the credential name instead")


def env_var_for(credential: str) -> str:
    """The environment variable that holds ``credential``'s key.

    >>> env_var_for("openai-prod")
    'LLM_THROTTLE_KEY_OPENAI_PROD'
    """
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", credential.upper())


def _read_secrets_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        # The path is configuration, not a secret; the file content never appears.
        raise ConfigError(
            f"{SECRETS_FILE_ENV}={str(path)!r} cannot be read: {type(exc).__name__}"
        ) from None
    entries: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        entries.setdefault(name.strip(), value.strip())
    return entries


def load_credential(
    credential: str,
    *,
    environ: Mapping[str, str] | None = None,
) -> Secret:
    """Resolve ``credential`` to its key on this worker (environment, then secrets file)."""
    if not isinstance(credential, str) or not _CREDENTIAL_NAME.match(credential):
        raise ConfigError(
            f"invalid credential name {credential!r}: use letters, digits, '_', '.', '-'"
        )
    env = os.environ if environ is None else environ
    variable = env_var_for(credential)
    value = env.get(variable, "").strip()
    if value:
        return Secret(value)
    secrets_file = env.get(SECRETS_FILE_ENV, "").strip()
    if secrets_file:
        value = _read_secrets_file(Path(secrets_file)).get(credential, "")
        if value:
            return Secret(value)
        where = f"${variable} or {credential!r} in {SECRETS_FILE_ENV}={secrets_file!r}"
    else:
        where = f"${variable} (or set {SECRETS_FILE_ENV} to a secrets file)"
    raise ConfigError(f"credential {credential!r} not found on this worker: set {where}")


def redact(text: str, secrets: Iterable[Secret] = ()) -> str:
    """``text`` with every given secret, and anything shaped like an API key, masked.

    >>> redact("Incorrect API key provided: sk-abc123def456")
    'Incorrect API key provided: ****'
    """
    for secret in secrets:
        value = secret.reveal()
        if len(value) >= 4:
            text = text.replace(value, MASK)
    return _KEY_LIKE.sub(MASK, text)
