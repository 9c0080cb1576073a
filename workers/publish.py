"""Sending completion tasks: the kwargs shown in Flower and logs never hold a prompt."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from typing import Any, cast

from celery import Celery
from kombu.utils import json

from throttle.connect import RedisClient, connect
from throttle.scheduler import ReleasedItem, SchedulePass
from workers.app_config import app_config, released_queue
from workers.message import CannotPrebuild, prebuilt_message, without_release

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


def _options(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The stored task's options that its publish keeps (every one but routing)."""
    options = dict(payload.get("options") or {})
    return {k: v for k, v in options.items() if k not in _ROUTING_OPTIONS and v is not None}


def republisher(app: Celery) -> Any:
    """A ``publish`` callable sending released (or parked) tasks to the released queue
    with every option their caller gave (``link``, ``link_error``, canvas, ``expires``,
    ``priority``, headers, ``task_id``: the payload's ``options``)."""

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
        if "message" in payload:  # ready-made, released by a pass that could not push it
            key, message = without_release(payload["message"])
            broker_client(app).lpush(key, message)
            return
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
        app.send_task(
            payload.get("task", COMPLETE_TASK),
            kwargs=kwargs,
            task_id=payload["task_id"],
            queue=queue,
            argsrepr="()",
            kwargsrepr=kwargs_repr(kwargs),
            **_options(payload),
        )

    return publish


def broker_client(app: Celery) -> RedisClient:
    """A plain client of the broker's Redis (kept on the app), for pushing a ready-made
    message onto its exact list key."""

    client = getattr(app, "llm_broker_client", None)
    if client is None:
        url = app_config(app).broker_url
        client = app.llm_broker_client = connect(url, what="celery.broker_url")
    return cast(RedisClient, client)


def prebuilt(app: Celery, group: str, entry_id: str, payload: Mapping[str, Any]) -> str | None:
    """The queue entry of ``payload`` as a ready-made message for a pass to push onto
    the released queue (``workers/message.py``); None when it cannot be made (the
    payload is then stored as JSON and a dispatcher publishes it)."""

    kwargs = dict(payload["kwargs"])
    kwargs["throttle_state"] = {**payload["state"], "awaiting_release": entry_id}
    try:
        return prebuilt_message(
            app,
            group,
            payload.get("task", COMPLETE_TASK),
            payload["task_id"],
            kwargs,
            released_queue(app_config(app)),
            _options(payload),
            kwargs_repr(kwargs),
        )
    except CannotPrebuild as exc:
        log.debug("entry %s of %s is stored as JSON: %s", entry_id, group, exc)
    except Exception:  # a fault here must not fail the task: the dispatcher publishes it
        log.exception("entry %s of %s: no ready-made message; stored as JSON", entry_id, group)
    return None


def publish_released(publish: Any, group: str, done: SchedulePass) -> ReleasedItem | None:
    """Publish the items a scheduling pass released with ``publish`` (a
    :func:`republisher`); returns the pushed item itself if the pass released it (its
    caller runs it in place)."""
    own = None
    for item in done.released:
        if item.own:
            own = item
            continue
        if item.published:  # the pass pushed its ready-made message itself
            continue
        try:
            payload = json.loads(item.payload)
            publish(payload, item.wait_s, group, item.item_id, item.reservation, item.slot_ms)
        except Exception:  # a broken payload must not block the others; it goes stale
            log.exception("could not publish released item %s of %s", item.item_id, group)
    return own
