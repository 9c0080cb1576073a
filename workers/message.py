"""Broker messages built ahead of time, for a release that publishes them in Redis.

When the broker is the limiter's own Redis server, an item waiting in the fair queue is
stored as the very message Celery would publish for it, and the scheduling pass that
releases it pushes that message onto the broker's queue in the same atomic step
(``throttle/lua/schedule.lua``). No dispatcher has to publish it, and nothing can be
lost between the release and the publish, so the release needs no claim.

The message is what ``app.send_task`` produces (every option of the caller: ``link``,
canvas, ``expires``, ``priority``, headers), captured at the producer instead of sent,
in the envelope kombu's Redis transport pushes. One header is left open: the pass
writes the release into it (slot, wait, lease, reason, the reservation's record).

Stored form: ``ESC <queue list key> TAB <delivery tag> TAB <the end of kombu's record
of it as unacknowledged: ', "<exchange>", "<routing key>"]'> LF <envelope up to the open
header> LF <rest>``: the pass that publishes it records it as kombu would, with no
parsing.
"""

from __future__ import annotations

import base64
import bisect
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from celery import Celery
from kombu import Producer
from kombu.serialization import dumps as serialize
from kombu.utils import json

from throttle.parking import MESSAGE_MARK as PARKED_MESSAGE_MARK
from throttle.redis_url import Topology, parse_redis_url

#: The header a released message carries its release in (as :func:`parse_release`
#: reads it), and the group the release is for.
RELEASE_HEADER = "llm_throttle_release"
GROUP_HEADER = "llm_throttle_group"
#: What the pass replaces; it appears in the envelope nowhere else.
OPEN_RELEASE = "\x00llm-throttle-release\x00"
#: A release starts so when the pass that pushed its message also recorded it in
#: kombu's hash of unacknowledged messages: the worker that takes it records nothing.
RECORDED_MARK = "+"
MESSAGE_MARK = PARKED_MESSAGE_MARK

#: kombu's Redis transport defaults (``kombu.transport.redis.Channel``).
_PRIORITY_STEPS = (0, 3, 6, 9)
_PRIORITY_SEP = "\x06\x16"
_DELIVERY_MODES = {"transient": 1, "persistent": 2}


class CannotPrebuild(Exception):
    """This message cannot be stored ready-made (compression, another transport)."""


@dataclass(frozen=True, slots=True)
class Release:
    """What a pass wrote into a released message."""

    group: str
    entry_id: str
    slot_us: int
    wait_s: float
    lease: bool
    #: 'ok' (with a reservation), 'expired' or 'refused' (without).
    reason: str
    #: The reservation's record ('' without one).
    record: str


def without_release(stored: str) -> tuple[str, str]:
    """The queue key and message of a stored one with an empty release (a worker then
    admits it anew): for a release that a pass could not publish itself."""
    first, head, tail = stored[len(MESSAGE_MARK) :].split("\n", 2)
    return first.split("\t", 1)[0], head + tail


def recorded_by_release(headers: Mapping[str, Any] | None) -> bool:
    """Whether a message's release says the pass recorded it as unacknowledged."""
    text = (headers or {}).get(RELEASE_HEADER)
    return isinstance(text, str) and text.startswith(RECORDED_MARK)


def parse_release(group: str, text: str) -> Release | None:
    """The release a pass wrote (``entry,slot_us,wait_us,lease,reason,record``, with a
    leading ``+`` when the pass recorded the message as unacknowledged), None if
    ``text`` is not one (the header of a message that was not released by a pass)."""
    parts = text.removeprefix(RECORDED_MARK).split(",", 5)
    if len(parts) != 6 or not parts[1].lstrip("-").isdigit() or not parts[2].isdigit():
        return None
    entry, slot_us, wait_us, lease, reason, record = parts
    return Release(group, entry, int(slot_us), int(wait_us) / 1e6, lease == "1", reason, record)


def broker_db_for_release(redis_url: str, broker_url: str) -> int | None:
    """The broker's database number when the broker is a Redis on the limiter's own
    server (a script may then push onto its queues), else None. Never on a Redis
    Cluster (a script there reaches its own slot only, and SELECT does not exist); a
    Sentinel master counts when both URLs name the same master of the same Sentinels."""
    if not broker_url.lower().startswith("redis"):
        return None
    limiter_target = parse_redis_url(redis_url)
    broker_target = parse_redis_url(broker_url, what="celery.broker_url")
    if Topology.CLUSTER in (limiter_target.topology, broker_target.topology):
        return None
    if limiter_target.topology is Topology.SENTINEL:
        same = broker_target.topology is Topology.SENTINEL and (
            set(limiter_target.hosts),
            limiter_target.master,
            limiter_target.password,
        ) == (set(broker_target.hosts), broker_target.master, broker_target.password)
        return broker_target.db if same else None
    limiter, broker = urlsplit(redis_url), urlsplit(broker_url)
    if broker.scheme not in ("redis", "rediss") or limiter.scheme != broker.scheme:
        return None
    same = (limiter.hostname, limiter.port or 6379, limiter.password) == (
        broker.hostname,
        broker.port or 6379,
        broker.password,
    )
    if not same:
        return None
    return _db_of(broker.path)


def unacked_keys(transport_options: Mapping[str, Any]) -> tuple[str, str]:
    """The keys of kombu's Redis transport's unacknowledged messages (its hash and its
    index by time), as the server sees them (with the global key prefix)."""
    prefix = transport_options.get("global_keyprefix", "")
    names = (
        transport_options.get("unacked_key", "unacked"),
        transport_options.get("unacked_index_key", "unacked_index"),
    )
    return f"{prefix}{names[0]}", f"{prefix}{names[1]}"


def redis_db(url: str) -> int:
    target = parse_redis_url(url)
    if target.topology is not Topology.SINGLE:
        return target.db
    return _db_of(urlsplit(url).path)


def _db_of(path: str) -> int:
    name = path.strip("/")
    return int(name) if name.isdigit() else 0


class _Capture(Producer):
    """A producer that keeps the message ``publish`` would send (kombu's Redis envelope)
    instead of sending it."""

    def __init__(self, app: Celery, transport_options: Mapping[str, Any]) -> None:
        self._app = app
        self._options = transport_options
        self.captured: tuple[str, dict[str, Any]] | None = None
        # Celery only enters this connection's error context; it is never connected.
        self._connection = app.connection_for_write()

    @property
    def connection(self) -> Any:
        return self._connection

    def publish(
        self,
        body: Any,
        routing_key: str | None = None,
        delivery_mode: int | str | None = None,
        mandatory: bool = False,
        immediate: bool = False,
        priority: int = 0,
        content_type: str | None = None,
        content_encoding: str | None = None,
        serializer: str | None = None,
        headers: Mapping[str, Any] | None = None,
        compression: str | None = None,
        exchange: Any = None,
        retry: bool = False,
        retry_policy: Any = None,
        declare: Any = None,
        expiration: float | None = None,
        timeout: float | None = None,
        confirm_timeout: float | None = None,
        **properties: Any,
    ) -> None:
        if compression:
            raise CannotPrebuild("compressed task messages are published by the dispatcher")
        exchange_name = exchange.name if hasattr(exchange, "name") else (exchange or "")
        if exchange_name or not routing_key:
            raise CannotPrebuild("only messages to a queue's direct route are prebuilt")
        content_type, content_encoding, data = serialize(body, serializer=serializer)
        if isinstance(data, str):
            data = data.encode(content_encoding or "utf-8")
        if delivery_mode is not None:
            properties["delivery_mode"] = _DELIVERY_MODES.get(str(delivery_mode), delivery_mode)
        if expiration is not None:
            properties["expiration"] = str(int(expiration * 1000))
        properties["delivery_info"] = {"exchange": "", "routing_key": routing_key}
        properties["priority"] = priority or 0
        properties["body_encoding"] = "base64"
        properties["delivery_tag"] = str(uuid.uuid4())
        envelope = {
            "body": base64.b64encode(data).decode("ascii"),
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": dict(headers or {}),
            "properties": properties,
        }
        self.captured = (self._queue_key(routing_key, priority), envelope)

    def _queue_key(self, queue: str, priority: int | None) -> str:
        steps = list(self._options.get("priority_steps", _PRIORITY_STEPS))
        sep = self._options.get("sep", _PRIORITY_SEP)
        prefix = self._options.get("global_keyprefix", "")
        level = max(0, min(int(priority or 0), 9))
        step = steps[bisect.bisect(steps, level) - 1]
        return f"{prefix}{queue}{sep}{step}" if step else f"{prefix}{queue}"


def prebuilt_message(
    app: Celery,
    group: str,
    task: str,
    task_id: str,
    kwargs: Mapping[str, Any],
    queue: str,
    options: Mapping[str, Any],
    kwargsrepr: str,
) -> str:
    """The stored form of the message ``app.send_task`` would send for this task to
    ``queue``, with the release header left open. Raises CannotPrebuild for a message
    this path does not cover (the dispatcher publishes those)."""
    capture = _Capture(app, app.conf.broker_transport_options or {})
    headers = {**dict(options.get("headers") or {}), GROUP_HEADER: group}
    headers[RELEASE_HEADER] = OPEN_RELEASE
    app.send_task(
        task,
        kwargs=dict(kwargs),
        task_id=task_id,
        queue=queue,
        producer=capture,
        argsrepr="()",
        kwargsrepr=kwargsrepr,
        **{**{k: v for k, v in options.items() if v is not None}, "headers": headers},
    )
    if capture.captured is None:
        raise CannotPrebuild("send_task published nothing")
    key, envelope = capture.captured
    text = json.dumps(envelope)
    open_at = text.find(json.dumps(OPEN_RELEASE))
    if open_at < 0 or text.count(json.dumps(OPEN_RELEASE)) != 1 or "\n" in key + text:
        raise CannotPrebuild("the release header could not be placed")
    head, tail = text[: open_at + 1], text[open_at + len(json.dumps(OPEN_RELEASE)) - 1 :]
    # kombu's record of an unacknowledged message: [message, exchange, routing key]
    delivery = envelope["properties"]["delivery_info"]
    suffix = f", {json.dumps(delivery['exchange'])}, {json.dumps(delivery['routing_key'])}]"
    tag = envelope["properties"]["delivery_tag"]
    if "\t" in key + tag + suffix:
        raise CannotPrebuild("the queue's name holds a tab")
    return f"{MESSAGE_MARK}{key}\t{tag}\t{suffix}\n{head}\n{tail}"
