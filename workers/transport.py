"""kombu's Redis transport with one repair, for riding out a Redis restart (issue 12).

When the broker's connection is lost, Celery closes the consumer's channel, and kombu
then tries to put back the messages the worker holds unacknowledged, over that very
connection. In kombu 5.7 that attempt can fail with ``AttributeError`` (the
transport's client is already gone) or a connection error; neither is caught, so the
worker stops with "Unrecoverable error" instead of reconnecting. Measured: both
workers of a stack exited when Redis was SIGKILLed mid-run with tasks in flight.

Here a failed put-back is logged and left to kombu's own sweep: the messages are
still recorded as unacknowledged in Redis, and the first worker back puts them back
once their visibility timeout has passed. Used by ``workers/app.py`` for a
``redis://`` or ``rediss://`` broker.

And one saving: a message that a scheduling pass pushed onto the queue is recorded as
unacknowledged by that same pass (``throttle/lua/schedule.lua``), in the very form
kombu writes, and its release header says so. Taking it records nothing again (kombu
would write the same record in a second round trip); its visibility timeout then
counts from its release instead of from its delivery.
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from redis.exceptions import RedisError

from workers.message import recorded_by_release

log = logging.getLogger(__name__)


class QoS(kombu_redis.QoS):
    def append(self, message: Any, delivery_tag: Any) -> None:
        if recorded_by_release(message.headers):
            virtual.QoS.append(self, message, delivery_tag)  # held, as kombu holds it
            return
        super().append(message, delivery_tag)

    def restore_unacked(self, client: Any = None) -> Any:
        try:
            return super().restore_unacked(client)
        except (AttributeError, RedisError, OSError) as exc:
            held = len(self._delivered)
            self._delivered.clear()
            log.warning(
                "broker connection lost: %d unacknowledged message(s) come back after the"
                " visibility timeout (%s)",
                held,
                exc,
            )
            return []


class Channel(kombu_redis.Channel):
    QoS = QoS


class Transport(kombu_redis.Transport):
    Channel = Channel


#: The value of Celery's ``broker_transport`` that selects it.
TRANSPORT = f"{__name__}:Transport"


class SentinelChannel(kombu_redis.SentinelChannel):
    QoS = QoS


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


#: ... and the same for a broker behind Redis Sentinel.
SENTINEL_TRANSPORT = f"{__name__}:SentinelTransport"
