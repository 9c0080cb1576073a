"""Routes: provider endpoints onto the engine, ``/__emu/*`` onto its test API.

Provider routes:

* ``POST /v1/chat/completions``                                   OpenAI
* ``POST /v1/messages``                                           Anthropic
* ``POST /openai/deployments/{deployment}/chat/completions?api-version=...``  Azure
* ``POST /v1beta/models/{model}:generateContent``                 Gemini

Test API (JSON in and out):

* ``GET  /__emu/state``           clock, limits, live pool levels, faults
* ``GET  /__emu/stats``           see :mod:`testing.emulator.stats`
* ``GET  /__emu/requests``        the last completion requests' bodies, as received
* ``POST /__emu/clock/advance``   ``{"seconds": 1.5}`` (manual clock only)
* ``POST /__emu/faults``          ``{"faults": [...], "replace": false}`` or ``{"clear": true}``
* ``POST /__emu/limits``          ``{"pool": "default", "limits": {"tokens": "1000/s"}}``
* ``POST /__emu/reset``
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

from testing.emulator.engine import Emulator
from testing.emulator.fault_config import FaultConfig
from testing.emulator.http import HttpRequest
from testing.emulator.kinds import Profile
from testing.emulator.limits import parse_limits
from testing.emulator.replies import Deferred, Reply, Streamed, json_reply
from testing.emulator.request import DEFAULT_API_VERSION, CompletionRequest
from throttle.errors import ConfigError

_AZURE = re.compile(r"^/openai/deployments/([^/]+)/chat/completions$")
_GEMINI = re.compile(r"^/v1beta/models/([^/:]+):generateContent$")
_STATIC = {"/v1/chat/completions": Profile.OPENAI, "/v1/messages": Profile.ANTHROPIC}


class EmulatorApp:
    """The HTTP handler: ``app(request) -> Reply | Deferred``."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator
        self._control: dict[tuple[str, str], Callable[[Any], object]] = {
            ("GET", "/__emu/state"): lambda _: emulator.state(),
            ("GET", "/__emu/stats"): lambda _: emulator.stats(),
            ("GET", "/__emu/requests"): lambda _: {"requests": emulator.recent_requests()},
            ("POST", "/__emu/clock/advance"): self._advance,
            ("POST", "/__emu/faults"): self._faults,
            ("POST", "/__emu/limits"): self._limits,
            ("POST", "/__emu/reset"): self._reset,
        }

    def __call__(self, request: HttpRequest) -> Reply | Deferred | Streamed:
        path = request.path
        if path.startswith("/__emu/"):
            return self._control_reply(request)
        completion = self._route(request)
        if completion is None:
            return json_reply(404, {"error": {"message": f"no route for {path}"}})
        if request.method != "POST":
            return json_reply(405, {"error": {"message": "use POST"}})
        return self.emulator.complete(completion)

    def _route(self, request: HttpRequest) -> CompletionRequest | None:
        path, headers, body = request.path, request.headers, request.body
        profile = _STATIC.get(path)
        if profile is not None:
            return CompletionRequest(profile, headers, body)
        match = _AZURE.match(path)
        if match:
            query = parse_qs(request.query)
            version = query.get("api-version", [DEFAULT_API_VERSION])[0]
            return CompletionRequest(
                Profile.AZURE, headers, body, path_model=unquote(match[1]), api_version=version
            )
        match = _GEMINI.match(path)
        if match:
            key = parse_qs(request.query).get("key", [None])[0]
            return CompletionRequest(
                Profile.GEMINI, headers, body, path_model=unquote(match[1]), query_key=key
            )
        return None

    def _control_reply(self, request: HttpRequest) -> Reply:
        action = self._control.get((request.method, request.path))
        if action is None:
            return json_reply(404, {"error": f"no test endpoint {request.method} {request.path}"})
        try:
            payload = json.loads(request.body) if request.body.strip() else {}
            if not isinstance(payload, dict):
                raise ConfigError("body: expected a JSON object")
            return json_reply(200, action(payload))
        except ValueError as exc:
            return json_reply(400, {"error": f"body: invalid JSON: {exc}"})
        except ConfigError as exc:
            return json_reply(400, {"error": str(exc)})

    def _advance(self, payload: dict[str, Any]) -> object:
        seconds = payload.get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise ConfigError("seconds: expected a number")
        return {"now_s": self.emulator.advance_clock(float(seconds))}

    def _faults(self, payload: dict[str, Any]) -> object:
        if payload.get("clear"):
            self.emulator.add_faults([], replace=True)
        else:
            items = payload.get("faults", [payload] if "kind" in payload else [])
            if not isinstance(items, list):
                raise ConfigError("faults: expected a list")
            now_s = self.emulator.now_s()
            faults = [
                FaultConfig.from_mapping(item, f"faults[{i}]", now_s=now_s)
                for i, item in enumerate(items)
            ]
            self.emulator.add_faults(faults, replace=bool(payload.get("replace", False)))
        return {"faults": self.emulator.state()["faults"]}

    def _limits(self, payload: dict[str, Any]) -> object:
        pool = payload.get("pool")
        if pool is not None and not isinstance(pool, str):
            raise ConfigError("pool: expected a pool name")
        self.emulator.set_limits(parse_limits(payload.get("limits"), "limits"), pool)
        return {"limits": self.emulator.state()["limits"]}

    def _reset(self, payload: dict[str, Any]) -> object:
        self.emulator.reset()
        return {"now_s": self.emulator.now_s()}
