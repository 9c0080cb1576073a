"""Ready-made broker messages (workers/message.py) against what kombu really pushes.

A message stored for a pass to publish must be the one ``app.send_task`` would have
sent: the same envelope, headers and body, on the same list key (priority included).
Compared here with the message kombu's Redis transport pushes onto a real server.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Exchange, Queue

from throttle.config import Lane
from throttle.keys import KeyBuilder
from throttle.limiter import RedisLimiter
from throttle.limits import LimitGroup
from throttle.scheduler import BrokerOnServer, FairScheduler, QueuedItem
from workers.message import (
    GROUP_HEADER,
    MESSAGE_MARK,
    RELEASE_HEADER,
    broker_db_for_release,
    parse_release,
    prebuilt_message,
    redis_db,
    unacked_keys,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def app(redis_url: str) -> Iterator[Celery]:
    broker = redis_url.rsplit("/", 1)[0] + "/3"
    app = Celery("message-test", broker=broker, set_as_current=False)
    queue = f"q-{uuid.uuid4().hex[:8]}"
    app.conf.task_queues = (Queue(queue, Exchange(queue, type="direct"), routing_key=queue),)
    app.conf.broker_transport_options = {
        "queue_order_strategy": "priority",
        # this test's own record of unacknowledged messages (the server is shared)
        "unacked_key": f"unacked-{queue}",
        "unacked_index_key": f"unacked-index-{queue}",
        "visibility_timeout": 0.2,
    }
    app.queue_name = queue  # type: ignore[attr-defined]
    yield app
    app.close()


def released(stored: str, release: str) -> tuple[str, dict[str, Any]]:
    """What schedule.lua pushes for ``stored``: its key and the envelope, the release
    written into the open header."""
    assert stored.startswith(MESSAGE_MARK)
    first, head, tail = stored[1:].split("\n", 2)
    key = first.split("\t", 1)[0]
    return key, json.loads(head + release + tail)


def sent_by_kombu(app: Celery, client: redis.Redis, key: str, **options: Any) -> dict[str, Any]:
    app.send_task("t.task", kwargs={"x": 1}, queue=app.queue_name, **options)  # type: ignore[attr-defined]
    raw = client.rpop(key)
    assert raw is not None, f"kombu pushed nothing onto {key!r}"
    return dict(json.loads(raw))


@pytest.mark.parametrize("priority", [None, 5])
def test_a_prebuilt_message_is_the_one_kombu_pushes(
    app: Celery, redis_url: str, priority: int | None
) -> None:
    client = redis.Redis.from_url(app.conf.broker_url)
    options: dict[str, Any] = {"headers": {"x-trace": "t-1"}, "expires": 300, "task_id": "id-1"}
    if priority is not None:
        options["priority"] = priority
    task_options = {k: v for k, v in options.items() if k != "task_id"}
    stored = prebuilt_message(
        app,
        "g",
        "t.task",
        "id-1",
        {"x": 1},
        app.queue_name,
        task_options,
        "{'x': 1}",  # type: ignore[attr-defined]
    )
    key, ours = released(stored, "id-1.1,100,5,1,ok,rec")
    expected_key = app.queue_name if priority is None else f"{app.queue_name}\x06\x163"  # type: ignore[attr-defined]
    assert key == expected_key
    theirs = sent_by_kombu(app, client, key, kwargsrepr="{'x': 1}", argsrepr="()", **options)
    assert ours["headers"].pop(GROUP_HEADER) == "g"
    assert ours["headers"].pop(RELEASE_HEADER) == "id-1.1,100,5,1,ok,rec"
    for name in ("expires", "eta"):  # clock-dependent: the same to within a second
        ours["headers"].pop(name, None), theirs["headers"].pop(name, None)
    for envelope in (ours, theirs):
        envelope["properties"].pop("delivery_tag")
        envelope["properties"].pop("expiration", None)
        envelope["headers"].pop("origin", None)
    assert base64.b64decode(ours.pop("body")) == base64.b64decode(theirs.pop("body"))
    assert ours == theirs


def test_the_release_is_read_back_and_garbage_is_not() -> None:
    got = parse_release("g", "abc.1,96365434280026,12000,1,ok,1|1,963,|2,5,")
    assert got is not None
    assert (got.entry_id, got.slot_us, got.wait_s, got.lease, got.reason, got.record) == (
        "abc.1",
        96365434280026,
        0.012,
        True,
        "ok",
        "1|1,963,|2,5,",
    )
    assert parse_release("g", "\x00llm-throttle-release\x00") is None
    assert parse_release("g", "a,b,c") is None


def test_a_release_in_redis_needs_the_broker_on_the_limiters_server() -> None:
    assert broker_db_for_release("redis://h:1/0", "redis://h:1/1") == 1
    assert broker_db_for_release("redis://h:1/0", "redis://h:1") == 0
    assert broker_db_for_release("redis://h:1/0", "redis://other:1/1") is None
    assert broker_db_for_release("redis://h:1/0", "redis://h:2/1") is None
    assert broker_db_for_release("redis://h:1/0", "amqp://h:1//") is None
    assert broker_db_for_release("redis://:a@h:1/0", "redis://:b@h:1/1") is None


def published_by_a_pass(
    app: Celery, redis_url: str, key_prefix: str, *, older_form: bool = False
) -> str:
    """Queue one ready-made message and run the pass that releases it (it pushes the
    message onto the broker's queue itself); returns its queue key. ``older_form``:
    stored as an older version stored it (no delivery tag nor record end)."""
    hash_key, index_key = unacked_keys(app.conf.broker_transport_options)
    broker = BrokerOnServer(redis_db(app.conf.broker_url), redis_db(redis_url), hash_key, index_key)
    limiter = RedisLimiter(redis.Redis.from_url(redis_url), keys=KeyBuilder(key_prefix))
    scheduler = FairScheduler(limiter, [Lane("interactive")], release_lead_s=0.01, broker=broker)
    # an empty bucket at 20/s: the item's slot is ~50 ms away, so its own push keeps it
    group = dataclasses.replace(LimitGroup.from_specs("g", {"requests": "20/s"}), cold_start=0.001)
    stored = prebuilt_message(
        app,
        "g",
        "t.task",
        "id-1",
        {"x": 1},
        app.queue_name,
        {},
        "{'x': 1}",  # type: ignore[attr-defined]
    )
    if older_form:
        first, rest = stored.split("\n", 1)
        stored = first.split("\t", 1)[0] + "\n" + rest
    done = scheduler.push(
        group, QueuedItem("id-1.0", {"requests": 1}, "interactive", "t", 1, 0, stored)
    )
    assert done.released == () and done.due_in_s is not None
    time.sleep(done.due_in_s)
    done = scheduler.run_pass(group)
    assert [(r.item_id, r.published) for r in done.released] == [("id-1.0", True)]
    return stored[1:].split("\n", 1)[0].split("\t", 1)[0]


@pytest.mark.parametrize("older_form", [False, True])
def test_a_message_a_pass_pushes_is_recorded_as_kombu_records_a_popped_one(
    app: Celery, redis_url: str, key_prefix: str, older_form: bool
) -> None:
    client = redis.Redis.from_url(app.conf.broker_url)
    key = published_by_a_pass(app, redis_url, key_prefix, older_form=older_form)
    hash_key, index_key = unacked_keys(app.conf.broker_transport_options)
    [raw] = client.lrange(key, 0, -1)
    message = json.loads(raw)
    tag = message["properties"]["delivery_tag"]
    assert json.loads(client.hget(hash_key, tag) or "null") == [message, "", app.queue_name]  # type: ignore[attr-defined]
    assert client.zscore(index_key, tag) == pytest.approx(time.time(), abs=5)
    # a worker that takes it and acknowledges it leaves no record behind
    with app.connection_for_read() as connection:
        got = connection.default_channel.basic_get(app.queue_name)  # type: ignore[attr-defined]
        assert got is not None and got.delivery_tag == tag
        got.ack()
    assert client.hlen(hash_key) == 0 and client.zcard(index_key) == 0


def test_a_message_a_pass_pushes_comes_back_when_its_worker_dies_as_it_pops_it(
    app: Celery, redis_url: str, key_prefix: str
) -> None:
    """kombu's Redis transport records a message a worker pops only after the pop: a
    worker killed in between would lose it. Recorded ahead by the pass, kombu's own
    sweep puts it back once its visibility timeout has passed."""
    client = redis.Redis.from_url(app.conf.broker_url)
    key = published_by_a_pass(app, redis_url, key_prefix)
    popped = client.rpop(key)  # the worker that popped it dies
    assert popped is not None and client.llen(key) == 0
    time.sleep(0.3)  # the visibility timeout (0.2 s) passes
    with app.connection_for_read() as connection:
        connection.default_channel.qos.restore_visible(interval=1)
    [back] = client.lrange(key, 0, -1)
    restored = json.loads(back)
    assert restored["headers"].pop("redelivered") is True
    assert restored["properties"]["delivery_info"].pop("redelivered") is True
    assert restored == json.loads(popped)
    assert parse_release("g", restored["headers"][RELEASE_HEADER]) is not None


def test_our_transport_records_nothing_again_for_a_message_a_pass_recorded(
    app: Celery, redis_url: str, key_prefix: str
) -> None:
    """The pass recorded its message as unacknowledged, and its release says so: a
    worker on workers/transport.py that takes it leaves that record as it is (kombu's
    own transport writes the same record again, restamped); its ack removes it. A
    message sent the usual way is recorded on delivery as kombu records it."""
    from workers.transport import TRANSPORT

    app.conf.broker_transport = TRANSPORT
    client = redis.Redis.from_url(app.conf.broker_url)
    key = published_by_a_pass(app, redis_url, key_prefix)
    hash_key, index_key = unacked_keys(app.conf.broker_transport_options)
    [raw] = client.lrange(key, 0, -1)
    message = json.loads(raw)
    assert message["headers"][RELEASE_HEADER].startswith("+"), "the release says: recorded"
    tag = message["properties"]["delivery_tag"]
    record, stamp = client.hget(hash_key, tag), client.zscore(index_key, tag)
    time.sleep(0.05)
    with app.connection_for_read() as connection:
        got = connection.default_channel.basic_get(app.queue_name)  # type: ignore[attr-defined]
        assert got is not None and got.delivery_tag == tag
        assert (client.hget(hash_key, tag), client.zscore(index_key, tag)) == (record, stamp)
        got.ack()
    assert client.hlen(hash_key) == 0 and client.zcard(index_key) == 0
    app.send_task("t.task", kwargs={"x": 2}, queue=app.queue_name)  # type: ignore[attr-defined]
    with app.connection_for_read() as connection:
        got = connection.default_channel.basic_get(app.queue_name)  # type: ignore[attr-defined]
        assert got is not None and client.hexists(hash_key, got.delivery_tag)
        got.ack()
    assert client.hlen(hash_key) == 0


def test_an_ack_after_the_broker_connection_was_lost_leaves_the_message_to_come_back() -> None:
    """A task that ends while the broker is away: Celery closed its channel for the
    reconnection (the put-back of held messages failed), and kombu 5.7 stopped the
    worker on the late ack ('Unrecoverable error: AttributeError ... client'). Now the
    record of the message stays, and it is delivered again after its visibility
    timeout."""
    from testing.redis_server import EmbeddedRedis
    from workers.transport import TRANSPORT

    with EmbeddedRedis(appendonly=True) as server:
        app = Celery("ack-test", broker=server.url, set_as_current=False)
        app.conf.broker_transport = TRANSPORT
        app.conf.broker_transport_options = {"visibility_timeout": 0.2}
        client = redis.Redis.from_url(server.url)
        app.send_task("t.task", kwargs={"x": 3}, queue="q")
        with app.connection_for_read() as connection:
            channel = connection.default_channel
            got = channel.basic_get("q")
            assert got is not None and client.hexists("unacked", got.delivery_tag)
            server.crash()
            channel.close()  # the put-back fails: Redis is away
            channel._pool = None  # as the worker's reconnection leaves it (seen in its log)
            server.start()
            got.ack()  # kombu raised AttributeError here
        assert client.hexists("unacked", got.delivery_tag)
        time.sleep(0.3)  # the visibility timeout passes
        with app.connection_for_read() as connection:
            connection.default_channel.qos.restore_visible(interval=1)
        assert client.llen("q") == 1
        app.close()
