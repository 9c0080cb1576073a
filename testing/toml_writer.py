"""A small TOML writer for the configuration documents the local stack writes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def to_toml(document: Mapping[str, Any]) -> str:
    """A small TOML writer for configuration documents (tables, scalars, lists)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, Mapping):
            return "{" + ", ".join(f"{key(k)} = {value(x)}" for k, x in v.items()) + "}"
        raise TypeError(f"cannot write {v!r} as TOML")

    def key(k: str) -> str:
        return k if k.replace("_", "").replace("-", "").isalnum() else value(k)

    lines: list[str] = []

    def table(path: list[str], body: Mapping[str, Any]) -> None:
        scalars = {k: v for k, v in body.items() if not _is_table(v)}
        if path and (scalars or not body):
            lines.append("[" + ".".join(key(p) for p in path) + "]")
        lines.extend(f"{key(k)} = {value(v)}" for k, v in scalars.items())
        for k, v in body.items():
            if _is_table(v):
                table([*path, k], v)

    table([], document)
    return "\n".join(lines) + "\n"


def _is_table(v: Any) -> bool:
    return (isinstance(v, Mapping) and any(isinstance(x, Mapping) for x in v.values())) or (
        isinstance(v, Mapping) and not v
    )
