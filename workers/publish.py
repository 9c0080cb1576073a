"""Sending completion tasks: the kwargs shown in Flower and logs never hold a prompt."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any

from celery import Celery
from kombu.utils import json

from throttle.scheduler import ReleasedItem, SchedulePass

COMPLETE_TASK = "llm_throttle.complete"
log = logging.getLogger(__name__)


def kwargs_repr(kwargs: Mapping[str, Any]) -> str:
    """What monitoring shows instead of the kwargs: no messages, no params."""
    shown = {
        k: kwargs.get(k)
        for k in ("provider", "model", "max_tokens", "tenant", "lane")
        if k in kwargs
    }
    messages = kwargs.get("messages")
    if isinstance(messages, list):
        shown["messages"] = f"<{len(messages)} hidden>"
    return repr(shown)


#: Options of a stored task that its publish sets anew (routing, id, what logs show).
_ROUTING_OPTIONS = ("queue", "exchange", "routing_key", "task_id", "argsrepr", "kwargsrepr")


def republisher(app: Celery) -> Any:
    """A ``publish`` callable sending released (or parked) tasks to the released queue
    with every option their caller gave (``link``, ``link_error``, canvas, ``expires``,
    ``priority``, headers, ``task_id``: the payload's ``options``)."""
    from workers.app import app_config, released_queue

    queue = released_queue(app_config(app))

    def publish(
        payload: Mapping[str, Any],
        wait_at_release_s: float,
        group: str,
        entry_id: str,
        reservation: str | None = None,
        slot_ms: float | None = None,
        *,
        claim: bool = True,
    ) -> None:
        kwargs = dict(payload["kwargs"])
        state = dict(payload["state"])
        state["wait_at_release_s"] = wait_at_release_s
        if reservation is not None:
            state["reservation"], state["slot_ms"] = reservation, slot_ms
        if claim:
            # What the receiving worker claims; the token tells this release's message
            # from another release's. (A pushed item released by its own push is in
            # no releasing set: nothing to claim.)
            state["release"] = {"group": group, "entry": entry_id, "token": uuid.uuid4().hex}
        kwargs["throttle_state"] = state
        options = {
            k: v for k, v in dict(payload.get("options") or {}).items() if k not in _ROUTING_OPTIONS
        }
        app.send_task(
            payload.get("task", COMPLETE_TASK),
            kwargs=kwargs,
            task_id=payload["task_id"],
            queue=queue,
            argsrepr="()",
            kwargsrepr=kwargs_repr(kwargs),
            **{k: v for k, v in options.items() if v is not None},
        )

    return publish


def publish_released(publish: Any, group: str, done: SchedulePass) -> ReleasedItem | None:
    """Publish the items a scheduling pass released with ``publish`` (a
    :func:`republisher`); returns the pushed item itself if the pass released it (its
    caller runs it in place)."""
    own = None
    for item in done.released:
        if item.own:
            own = item
            continue
        try:
            payload = json.loads(item.payload)
            publish(payload, item.wait_s, group, item.item_id, item.reservation, item.slot_ms)
        except Exception:  # a broken payload must not block the others; it goes stale
            log.exception("could not publish released item %s of %s", item.item_id, group)
    return own
