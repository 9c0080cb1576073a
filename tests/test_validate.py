"""A received completion message's arguments (workers/validate.py), without a worker."""

from __future__ import annotations

from typing import Any

import pytest

from throttle.errors import InvalidRequestError
from workers.validate import completion_kwargs

GOOD: dict[str, Any] = {
    "provider": "emu",
    "model": "m",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 8,
}


def test_a_good_message_passes_by_name_or_position() -> None:
    assert completion_kwargs([], GOOD) == GOOD
    rest = {k: v for k, v in GOOD.items() if k not in ("provider", "model")}
    assert completion_kwargs(["emu", "m"], rest) == GOOD
    state = {"deadline_at_s": 1e9, "costs": {"requests": 1.0}, "attempts": 2}
    assert completion_kwargs([], {**GOOD, "throttle_state": state})["throttle_state"] == state


@pytest.mark.parametrize(
    ("args", "changes", "named"),
    [
        ([], {"max_tokens": "8"}, "max_tokens must be int"),
        ([], {"max_tokens": True}, "max_tokens must be int"),
        ([], {"messages": "hi"}, "messages must be list or tuple"),
        ([], {"messages": ["hi"]}, "messages[0] must be an object"),
        ([], {"temperature": 0.2}, "unknown argument(s) ['temperature']"),
        ([], {"tenant": 3}, "tenant must be str or null"),
        ([], {"params": {1: 2}}, "params keys must be strings"),
        ([], {"throttle_state": {"costs": {}}}, "deadline_at_s must be a number"),
        ([], {"throttle_state": {"deadline_at_s": float("nan")}}, "deadline_at_s"),
        ([], {"throttle_state": {"deadline_at_s": 1, "costs": {"a": "x"}}}, "costs"),
        ([], {"throttle_state": {"deadline_at_s": 1, "release": {"group": 1}}}, "release"),
        (["emu"], {}, "given twice"),
        ([0] * 12, {}, "12 positional"),  # one more than the task takes
    ],
)
def test_a_broken_message_names_what_is_wrong(
    args: list[Any], changes: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidRequestError) as info:
        completion_kwargs(args, {**GOOD, **changes})
    assert named in str(info.value)


def test_a_missing_argument_is_named() -> None:
    with pytest.raises(InvalidRequestError, match="missing \\['max_tokens'\\]"):
        completion_kwargs([], {k: v for k, v in GOOD.items() if k != "max_tokens"})
