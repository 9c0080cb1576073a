"""The gateway's settings: the ``[gateway]`` table of the throttle configuration.

::

    [gateway]
    host = "0.0.0.0"
    port = 8080
    max_wait_s = 30            # answer 429 when a request would wait longer to start
    request_timeout_s = 600    # the longest a caller waits for its answer
    max_body_bytes = 1048576   # larger bodies get 413
    keys_file = "/run/secrets/gateway-keys.toml"   # more keys, kept out of this file

    [gateway.keys]
    "sha256:5e88...42d8" = { tenant = "acme", lane = "interactive" }

A key is written as ``sha256:<hex digest of the key>`` (``llm-throttle gateway-key``
makes a key and prints its line), or as the key itself in a secrets file. Either way
the gateway keeps only digests in memory and never logs a key.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from throttle.errors import ConfigError

_OPTIONS = {
    "host", "port", "max_wait_s", "request_timeout_s", "max_body_bytes", "keys", "keys_file",
    "providers",
}  # fmt: skip
_DIGEST = "sha256:"


def key_digest(key: str) -> str:
    """The digest a key is known by: ``sha256:<hex>``."""
    return _DIGEST + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyGrant:
    """What a gateway key may do: run as this tenant, in this lane (None: defaults)."""

    tenant: str | None = None
    lane: str | None = None


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "127.0.0.1"
    port: int = 8080
    max_wait_s: float = 30.0
    request_timeout_s: float = 600.0
    max_body_bytes: int = 1_048_576
    #: Key digest (``sha256:<hex>``) -> its grant.
    keys: Mapping[str, KeyGrant] = field(default_factory=dict, repr=False)
    #: Providers served (default: every one whose API the gateway speaks).
    providers: tuple[str, ...] | None = None

    def grant_for(self, key: str | None) -> KeyGrant | None:
        """The grant of a presented key; None for a missing or unknown one."""
        if not key:
            return None
        return self.keys.get(key_digest(key))


def gateway_settings(raw: Mapping[str, Any]) -> GatewaySettings:
    """Validate the ``[gateway]`` table; every error names the key."""
    unknown = sorted(set(raw) - _OPTIONS)
    if unknown:
        raise ConfigError(f"gateway: unknown key(s) {unknown}; known: {sorted(_OPTIONS)}")
    keys = dict(_keys(raw.get("keys", {}), "gateway.keys"))
    if raw.get("keys_file") is not None:
        path = Path(str(raw["keys_file"]))
        try:
            document = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"gateway.keys_file: cannot read {path}: {exc}") from None
        keys.update(_keys(document.get("keys", {}), f"{path}: keys"))
    providers = raw.get("providers")
    if providers is not None and (
        not isinstance(providers, list) or not all(isinstance(p, str) for p in providers)
    ):
        raise ConfigError("gateway.providers: expected a list of provider names")
    settings = GatewaySettings(
        host=_typed(raw, "host", str, "127.0.0.1"),
        port=_typed(raw, "port", int, 8080),
        max_wait_s=float(_typed(raw, "max_wait_s", (int, float), 30.0)),
        request_timeout_s=float(_typed(raw, "request_timeout_s", (int, float), 600.0)),
        max_body_bytes=_typed(raw, "max_body_bytes", int, 1_048_576),
        keys=keys,
        providers=tuple(providers) if providers is not None else None,
    )
    if settings.max_wait_s < 0 or settings.request_timeout_s <= 0 or settings.max_body_bytes < 1:
        raise ConfigError("gateway: max_wait_s >= 0, request_timeout_s > 0, max_body_bytes >= 1")
    return settings


def _typed(raw: Mapping[str, Any], name: str, types: Any, default: Any) -> Any:
    value = raw.get(name, default)
    if isinstance(value, bool) or not isinstance(value, types):
        raise ConfigError(f"gateway.{name}: unexpected value {value!r}")
    return value


def _keys(table: Any, where: str) -> dict[str, KeyGrant]:
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: expected a table of key = {{ tenant = ..., lane = ... }}")
    keys: dict[str, KeyGrant] = {}
    for n, (key, spec) in enumerate(table.items()):
        label = f"{where}[{n}]"  # never the key itself: it may be a secret
        if not isinstance(spec, Mapping) or set(spec) - {"tenant", "lane"}:
            raise ConfigError(f"{label}: expected {{ tenant = ..., lane = ... }}")
        for name in ("tenant", "lane"):
            if spec.get(name) is not None and not isinstance(spec[name], str):
                raise ConfigError(f"{label}.{name}: expected a string")
        digest = key if key.startswith(_DIGEST) else key_digest(key)
        if len(digest) != len(_DIGEST) + 64:
            raise ConfigError(f"{label}: a sha256: digest has 64 hex digits")
        keys[digest.lower()] = KeyGrant(spec.get("tenant"), spec.get("lane"))
    return keys
