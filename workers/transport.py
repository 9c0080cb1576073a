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

And two savings: one Redis client object per connection pool for publishing and
acknowledging (kombu made one per call). And a message that a scheduling pass pushed
onto the queue is recorded as unacknowledged by that same pass
(``throttle/lua/schedule.lua``), in the very form kombu writes, and its release header
says so. Taking it records nothing again (kombu would write the same record in a
second round trip); its visibility timeout then counts from its release instead of
from its delivery.
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

    def ack(self, delivery_tag: Any) -> None:
        """A task that ends while the broker is away (its channel closed for the
        reconnection) cannot remove its record: kombu 5.7 then stopped the worker
        ('Unrecoverable error: AttributeError ... client', seen with Redis SIGKILLed
        under load). The record stays, and kombu's sweep delivers the message again
        after its visibility timeout (at least once, as acks_late promises)."""
        try:
            super().ack(delivery_tag)
        except (AttributeError, RedisError, OSError) as exc:
            self._unrecorded(delivery_tag, "acknowledge", exc)

    def reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        try:
            super().reject(delivery_tag, requeue=requeue)
        except (AttributeError, RedisError, OSError) as exc:
            self._unrecorded(delivery_tag, "reject", exc)

    def _unrecorded(self, delivery_tag: Any, what: str, exc: Exception) -> None:
        if isinstance(exc, AttributeError) and self.channel.connection is not None:
            raise exc  # not the closed channel: a fault of ours or kombu's
        virtual.QoS.ack(self, delivery_tag)  # no longer held here
        log.warning(
            "broker connection lost: could not %s message %s; it comes back after the"
            " visibility timeout (%s)",
            what,
            delivery_tag,
            exc,
        )

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
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        """kombu builds a new Redis client object (with its few hundred response
        callbacks) for every publish and acknowledgement, about 0.2 ms of CPU each;
        one per connection pool serves them all (a client is a thin handle on its
        pool, safe to share)."""
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


#: The value of Celery's ``broker_transport`` that selects it.
TRANSPORT = f"{__name__}:Transport"


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """kombu's Sentinel channel (the master found through the Sentinels) with the
    repairs and the shared client above."""


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


#: ... and the same for a broker behind Redis Sentinel.
SENTINEL_TRANSPORT = f"{__name__}:SentinelTransport"
