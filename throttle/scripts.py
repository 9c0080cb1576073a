"""Lua scripts: one per file under ``throttle/lua``, shipped as package data.

A line ``--@include lib/name.lua`` (indented or not) is replaced by that file's text,
so scripts share code without Redis 7 functions. Most of ``lib/`` defines functions;
a ``lib/phase_*.lua`` is a block of one script's statements, run where it is included
(see ``lib/phase_push.lua``). A name ``F_<NAME>`` is replaced by the string literal of
that field of the state or scheduler hash (:mod:`throttle.fields`). Each script is
registered once per client; redis-py runs it with EVALSHA and reloads it after a
``SCRIPT FLUSH`` or a server restart.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any, cast

from redis.commands.core import Script
from redis.exceptions import NoScriptError

from throttle.connect import RedisClient
from throttle.fields import LUA_NAMES, lua_literal

_INCLUDE = re.compile(r"^[ \t]*--@include (\S+)$", re.MULTILINE)
_FIELD = re.compile(r"\bF_([A-Z_]+)\b")


@cache
def script_source(name: str) -> str:
    """The text of ``lua/<name>`` with its includes inlined (each at most once)."""
    root = resources.files("throttle") / "lua"
    seen: set[str] = set()

    def expand(path: str) -> str:
        text = (root / path).read_text(encoding="utf-8")

        def include(match: re.Match[str]) -> str:
            target = match[1]
            if target in seen:
                return ""
            seen.add(target)
            return expand(target)

        return _INCLUDE.sub(include, text)

    def field(match: re.Match[str]) -> str:
        if match[1] not in LUA_NAMES:
            raise KeyError(f"lua/{name}: F_{match[1]} is not in throttle.fields.LUA_NAMES")
        return lua_literal(match[1])

    return _FIELD.sub(field, expand(name))


class Scripts:
    """The limiter's scripts, registered on one client."""

    def __init__(self, client: RedisClient) -> None:
        # RedisCluster registers scripts as redis.Redis does (typed for the latter only);
        # on a Cluster, EVALSHA goes to the node owning the keys' slot and SCRIPT LOAD
        # to every master.
        register: Callable[[str], Script] = cast(Any, client).register_script
        self.admit = register(script_source("admit.lua"))
        self.cancel = register(script_source("cancel.lua"))
        self.settle = register(script_source("settle.lua"))
        self.begin = register(script_source("begin.lua"))
        self.pause = register(script_source("pause.lua"))
        self.release = register(script_source("release.lua"))
        self.claim = register(script_source("claim.lua"))
        self.schedule = register(script_source("schedule.lua"))
        self.enqueue = register(script_source("enqueue.lua"))
        self._client = client

    def run(self, script: Script, keys: list[str], *args: object) -> Any:
        """Run ``script`` with EVALSHA (what ``script(keys=..., args=...)`` does, with
        less Python on the admission path), loading it first if the server lacks it."""
        execute: Callable[..., Any] = self._client.execute_command
        try:
            return execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            script.sha = str(self._client.script_load(script.script))
            return execute("EVALSHA", script.sha, len(keys), *keys, *args)
