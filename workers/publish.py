"""Sending completion tasks: the kwargs shown in Flower and logs never hold a prompt."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from celery import Celery

COMPLETE_TASK = "llm_throttle.complete"


def kwargs_repr(kwargs: Mapping[str, Any]) -> str:
    """What monitoring shows instead of the kwargs: no messages, no params."""
    shown = {k: kwargs.get(k) for k in ("provider", "model", "max_tokens", "tenant") if k in kwargs}
    messages = kwargs.get("messages")
    if isinstance(messages, list):
        shown["messages"] = f"<{len(messages)} hidden>"
    return repr(shown)


def republisher(app: Celery) -> Any:
    """A dispatcher ``publish`` callable sending parked tasks to the released queue."""
    from workers.app import app_config, released_queue

    queue = released_queue(app_config(app))

    def publish(
        payload: Mapping[str, Any], wait_at_release_s: float, group: str, entry_id: str
    ) -> None:
        kwargs = dict(payload["kwargs"])
        state = dict(payload["state"])
        state["wait_at_release_s"] = wait_at_release_s
        # What the receiving worker claims; the token tells this release's message
        # from another release's.
        state["release"] = {"group": group, "entry": entry_id, "token": uuid.uuid4().hex}
        kwargs["throttle_state"] = state
        app.send_task(
            payload.get("task", COMPLETE_TASK),
            kwargs=kwargs,
            task_id=payload["task_id"],
            queue=queue,
            argsrepr="()",
            kwargsrepr=kwargs_repr(kwargs),
        )

    return publish
