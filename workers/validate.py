"""Check a received completion message before anything runs (issue 12).

Messages do not only come from ``enqueue``: any producer can send the task by name,
and a broken one sends garbage. Each argument is checked for its type here, so a bad
message fails with :class:`~throttle.errors.InvalidRequestError` naming what is wrong
(in the task's result and the log), never with a ``TypeError`` from deep inside.
The request's content (the messages' shape, the model, the params) is checked later
by the provider profile, with the same typed error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from throttle.errors import InvalidRequestError

#: The completion task's parameters in order, with the types each may have.
PARAMETERS: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("provider", (str,)),
    ("model", (str,)),
    ("messages", (list, tuple)),
    ("max_tokens", (int,)),
    ("tenant", (str, type(None))),
    ("credential", (str, type(None))),
    ("metadata", (dict, type(None))),
    ("params", (dict, type(None))),
    ("throttle_state", (dict, type(None))),
    ("lane", (str, type(None))),
    ("stream", (bool,)),
)
REQUIRED = ("provider", "model", "messages", "max_tokens")

#: ThrottleState's fields and the JSON types each may have (workers/run_state.py).
_NUMBER = (int, float)
_OPTIONAL_NUMBER = (int, float, type(None))
_OPTIONAL_TEXT = (str, type(None))
STATE_FIELDS: dict[str, tuple[type, ...]] = {
    "deadline_at_s": _NUMBER,
    "reservation": _OPTIONAL_TEXT,
    "reservation_id": _OPTIONAL_TEXT,  # a task parked by an older version
    "costs": (dict,),
    "input_tokens": _NUMBER,
    "output_tokens": _NUMBER,
    "provider_costs": (dict,),
    "slot_ms": _OPTIONAL_NUMBER,
    "wait_at_release_s": _OPTIONAL_NUMBER,
    "started_ms": _OPTIONAL_NUMBER,
    "parked_at_s": _OPTIONAL_NUMBER,
    "release": (dict, type(None)),
    "awaiting_release": _OPTIONAL_TEXT,
    "credential": _OPTIONAL_TEXT,
    "waited_s": _NUMBER,
    "attempts": (int,),
    "rate_limited": (int,),
    "overloaded": (int,),
    "parks": (int,),
    "error_retries": (int,),
}


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):  # JSON true is not a number here
        return bool in types
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, types)


def _names(types: tuple[type, ...]) -> str:
    return " or ".join("null" if t is type(None) else t.__name__ for t in types)


def completion_kwargs(args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The completion's arguments by name, each of a type it may have; raises
    InvalidRequestError naming the first problem."""
    if not isinstance(kwargs, Mapping) or not isinstance(args, Sequence):
        raise InvalidRequestError("malformed task message: args must be a list, kwargs a dict")
    if len(args) > len(PARAMETERS):
        raise InvalidRequestError(f"malformed task message: {len(args)} positional arguments")
    named = dict(zip((name for name, _ in PARAMETERS), args, strict=False))
    twice = sorted(set(named) & set(kwargs))
    if twice:
        raise InvalidRequestError(f"malformed task message: {twice} given twice")
    named.update(kwargs)
    known = dict(PARAMETERS)
    unknown = sorted(str(k) for k in named if k not in known)
    if unknown:
        raise InvalidRequestError(f"malformed task message: unknown argument(s) {unknown}")
    missing = [name for name in REQUIRED if name not in named]
    if missing:
        raise InvalidRequestError(f"malformed task message: missing {missing}")
    for name, value in named.items():
        if not _type_ok(value, known[name]):
            raise InvalidRequestError(
                f"malformed task message: {name} must be {_names(known[name])},"
                f" not {type(value).__name__}"
            )
    for i, message in enumerate(named["messages"]):
        if not isinstance(message, Mapping):
            raise InvalidRequestError(f"messages[{i}] must be an object")
    for name in ("params", "metadata"):
        if any(not isinstance(k, str) for k in named.get(name) or {}):
            raise InvalidRequestError(f"{name} keys must be strings")
    if named.get("throttle_state") is not None:
        check_state(named["throttle_state"])
    return named


def check_state(state: Mapping[str, Any]) -> None:
    """A throttle state as ThrottleState.from_json takes it; InvalidRequestError if not."""
    if not _type_ok(state.get("deadline_at_s"), _NUMBER):
        raise InvalidRequestError("throttle_state.deadline_at_s must be a number")
    for name, value in state.items():
        types = STATE_FIELDS.get(name)
        if types is not None and not _type_ok(value, types):
            raise InvalidRequestError(f"throttle_state.{name} must be {_names(types)}")
    for name in ("costs", "provider_costs"):
        for key, cost in (state.get(name) or {}).items():
            if not isinstance(key, str) or not _type_ok(cost, _NUMBER):
                raise InvalidRequestError(f"throttle_state.{name}: name -> number pairs")
    release = state.get("release")
    if release is not None and not all(
        isinstance(release.get(k), str) for k in ("group", "entry", "token")
    ):
        raise InvalidRequestError("throttle_state.release: group, entry and token as text")
