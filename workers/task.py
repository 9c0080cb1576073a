"""The worker-side middleware: a Celery task base class that runs the throttle.

:class:`ThrottledTask` turns the runner's outcomes into Celery's terms: a completed call
is the task's result; a parked task is stored in Redis, shown as state ``PARKED`` and its
message acknowledged (``Ignore``); a task to retry later is sent again with a countdown
that does not consume ``max_retries`` (throttle budget and error budget are the
runner's own, in the ``throttle_state`` that travels with the task).

What Flower shows of the throttle, per task: Flower displays only Celery's own task
fields, so the facts travel in those. A completed task's result starts with its
``throttle`` facts (seconds waited, provider calls, 429s, parks, Celery retries); a
parked task has state ``PARKED`` and its facts as result (as ``AsyncResult.info`` has
them), from the ``task-parked`` event; a retried task has state ``RETRY`` with the error
that caused it as exception.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from celery import Task
from celery.backends.redis import RedisBackend
from celery.exceptions import Ignore
from celery.utils import uuid
from kombu.utils import json

from throttle.errors import StorageError, ThrottleError
from throttle.limiter import EPOCH_MS
from throttle.scheduler import QueuedItem, ReleasedItem
from workers.context import WorkerContext, worker_context
from workers.message import GROUP_HEADER, RELEASE_HEADER, parse_release
from workers.publish import kwargs_repr, prebuilt, publish_released, republisher
from workers.runtime import (
    Completed,
    CompletionCall,
    EventSink,
    Parked,
    Queued,
    RetryLater,
    ThrottleState,
)

log = logging.getLogger(__name__)

#: A released task that could not claim its entry (Redis away) tries again this much
#: later, its release kept: a restart or a failover takes seconds.
CLAIM_RETRY_S = 1.0

#: Custom task state shown in Flower while a task waits in the dispatch queue.
PARKED = "PARKED"


class ThrottledTask(Task):
    """Base class of LLM tasks: every call goes through the shared throttle."""

    acks_late = True
    reject_on_worker_lost = True
    #: Error retries are counted in the throttle state, not by Celery.
    max_retries = None

    def run_completion(
        self,
        call: CompletionCall,
        state_json: Mapping[str, Any] | None,
        sink: EventSink | None = None,
    ) -> Any:
        context = worker_context(self.app)
        if state_json:
            state = ThrottleState.from_json(state_json)
        else:
            state = ThrottleState.new(context.config.worker.throttle_deadline_s)
        if state.awaiting_release is not None:
            self._take_release(context, state)
        if state.release is not None:
            # Released from the queue: claim the entry, unless another release's copy
            # of this task (released again when it looked lost) has it.
            release, state.release = state.release, None
            celery = context.config.celery
            marker_ttl_s = (
                2 * celery.visibility_timeout_s + context.config.worker.throttle_deadline_s
            )
            try:
                claimed = context.parking.claim(
                    release["group"], release["entry"], release["token"], marker_ttl_s=marker_ttl_s
                )
            except StorageError as exc:  # Redis away (a restart, a failover): claim later
                state.release = release
                self._retry(RetryLater(CLAIM_RETRY_S, exc, state), self._kwargs())
            if not claimed:
                log.info("task %s: released twice; this copy is dropped", self.request.id)
                raise Ignore()
        kwargs = self._kwargs()
        for _ in range(8):  # a released own item that cannot run re-queues; bounded
            outcome = context.runner.run(call, state, sink)
            if isinstance(outcome, Completed):
                return outcome.result
            if not isinstance(outcome, Queued):
                break
            own = self._queue(context, outcome, kwargs)
            if own is None:
                raise Ignore()
            state = outcome.state
            state.reservation, state.slot_ms = own.reservation, own.slot_ms
            state.wait_at_release_s = own.wait_s
        if isinstance(outcome, Parked):  # released with a far slot by an older version
            self._park(context, outcome, kwargs)
            raise Ignore()
        if not isinstance(outcome, RetryLater):
            raise ThrottleError(f"task {self.request.id}: re-queued too often")
        self._retry(outcome, kwargs)

    def _kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.request.kwargs.items() if k != "throttle_state"}

    def _retry(self, outcome: RetryLater, kwargs: dict[str, Any]) -> NoReturn:
        log.info(
            "task %s: retry in %.1f s (%s)", self.request.id, outcome.countdown_s, outcome.error
        )
        kwargs["throttle_state"] = outcome.state.to_json()
        raise self.retry(
            exc=outcome.error,
            kwargs=kwargs,
            countdown=outcome.countdown_s,
            max_retries=None,
            argsrepr="()",
            kwargsrepr=kwargs_repr(kwargs),
        )

    def _take_release(self, context: WorkerContext, state: ThrottleState) -> None:
        """A message a pass pushed itself: its header holds the release (the slot, the
        reservation's record). Without a release that matches (a copy sent some other
        way), the task is admitted afresh."""
        entry, state.awaiting_release = state.awaiting_release, None
        group = getattr(self.request, GROUP_HEADER, None)
        text = getattr(self.request, RELEASE_HEADER, None)
        release, named = None, None
        if isinstance(group, str) and isinstance(text, str):
            named = context.config.limit_group_named(group)
            release = parse_release(group, text) if named is not None else None
        if release is None or named is None or release.entry_id != entry:
            log.warning("task %s: no readable release; admitted anew", self.request.id)
            return
        state.wait_at_release_s = release.wait_s
        settings, state.credential = named
        if release.record:
            limit_group = context.config.limit_group(settings, None, state.credential)
            state.reservation = context.limiter.handle_for(
                limit_group, release.entry_id, release.slot_us, release.record
            )
            state.slot_ms = EPOCH_MS + release.slot_us / 1000

    def _payload(self, kwargs: Mapping[str, Any], state: ThrottleState) -> dict[str, Any]:
        """What publishing this task again needs: its kwargs and state, and every option
        its caller gave (Celery's own view of them, as ``Task.retry`` uses)."""
        options = dict(self.signature_from_request(self.request, (), kwargs).options)
        return {
            "task": self.name,
            "task_id": self.request.id,
            "kwargs": dict(kwargs),
            "state": state.to_json(),
            "options": options,
        }

    def _push(
        self, context: WorkerContext, outcome: Queued, item_id: str, payload: Mapping[str, Any]
    ) -> tuple[ReleasedItem | None, dict[str, Any]]:
        """Push one item into its flow and publish what the push's pass released.
        Returns the pushed item if that pass released it (else None: it waits in the
        queue), and the facts a waiting task shows."""
        stored = None
        if context.scheduler.publishes:
            stored = prebuilt(self.app, outcome.group.name, item_id, payload)
        item = QueuedItem(
            item_id=item_id,
            costs=outcome.state.costs,
            lane=outcome.lane,
            tenant=outcome.tenant,
            weight=outcome.weight,
            deadline_ms=outcome.deadline_ms,
            payload=stored if stored is not None else json.dumps(payload),
            stats_apart=outcome.stats_apart,
        )
        done = context.scheduler.push(outcome.group, item)
        own = publish_released(republisher(self.app), outcome.group.name, done)
        facts = {
            "group": outcome.group.name,
            "lane": outcome.lane,
            "tenant": outcome.tenant,
            # at least until the group's next release (the queue's due time)
            "slot_in_s": round(max(outcome.wait_s, done.due_in_s or 0.0), 3),
            **outcome.state.facts(),
        }
        return own, facts

    def _queue(
        self, context: WorkerContext, outcome: Queued, kwargs: Mapping[str, Any]
    ) -> ReleasedItem | None:
        """A received task joins the fair queue. Returns its own item when the push
        released it (run it here), else None: the task waits in the queue and its
        message can be acknowledged."""
        state = outcome.state
        item_id = f"{self.request.id}.{state.parks}"
        own, facts = self._push(context, outcome, item_id, self._payload(kwargs, state))
        if own is not None:
            return own
        self.update_state(state=PARKED, meta=facts)
        # A custom event sets the custom state in event monitors; of its fields Flower
        # shows only Celery's own, so the facts also go as the result, as in the backend.
        self.send_event("task-parked", result=repr(facts), **facts)
        return None

    # -- queueing at send time ------------------------------------------------------

    def call_from_kwargs(self, kwargs: Mapping[str, Any]) -> CompletionCall | None:
        """The completion a send with these kwargs asks for, so that a send into a
        backlogged group can join the fair queue at once; None (the default): every
        send goes to the broker."""
        return None

    def apply_async(
        self,
        args: Any = None,
        kwargs: Mapping[str, Any] | None = None,
        task_id: str | None = None,
        producer: Any = None,
        link: Any = None,
        link_error: Any = None,
        shadow: str | None = None,
        **options: Any,
    ) -> Any:
        """Send the task; while its group has work queued, push it straight into the
        fair queue instead (it would only join the queue behind that work), so a
        backlogged task passes through Celery once, when it is released.

        ``queue_seen_empty=True``: the caller has just read the group's fair queue
        (every credential's) and found it empty (the gateway's backpressure read), so
        the send goes to the broker without reading it again."""
        if not options.pop("queue_seen_empty", False):
            queued = self._queue_at_send(args, kwargs, task_id, link, link_error, shadow, options)
            if queued is not None:
                return queued
        return super().apply_async(
            args, kwargs, task_id, producer, link, link_error, shadow, **options
        )

    def _queue_at_send(
        self,
        args: Any,
        kwargs: Mapping[str, Any] | None,
        task_id: str | None,
        link: Any,
        link_error: Any,
        shadow: str | None,
        options: Mapping[str, Any],
    ) -> Any:
        if args or not kwargs or "throttle_state" in kwargs or self.app.conf.task_always_eager:
            return None
        if options.get("countdown") or options.get("eta"):
            return None
        call = self.call_from_kwargs(kwargs)
        if call is None:
            return None
        context = worker_context(self.app)
        task_id = task_id or uuid()
        call = dataclasses.replace(call, request_id=task_id)
        state = ThrottleState.new(context.config.worker.throttle_deadline_s)
        try:
            outcome = context.runner.queue_directly(call, state)
        except (ThrottleError, TypeError, ValueError, AttributeError):
            # Redis away, or a request a worker will refuse with its typed error: send it
            return None
        if outcome is None:
            return None
        payload = {
            "task": self.name,
            "task_id": task_id,
            "kwargs": dict(kwargs),
            "state": state.to_json(),
            "options": self._send_options(link, link_error, shadow, options),
        }
        try:
            own, facts = self._push(context, outcome, f"{task_id}.{state.parks}", payload)
        except StorageError:
            return None
        if own is not None:  # the queue emptied meanwhile: send it with its reservation
            republisher(self.app)(
                payload, own.wait_s, outcome.group.name, own.item_id, own.reservation,
                own.slot_ms, claim=False,
            )  # fmt: skip
        else:
            self._store_parked(task_id, facts)
            with self.app.events.default_dispatcher() as events:
                events.send(
                    "task-parked", uuid=task_id, name=self.name, result=repr(facts), **facts
                )
        return self.AsyncResult(task_id)

    def _store_parked(self, task_id: str, facts: Mapping[str, Any]) -> None:
        """The result a task queued at send shows until it runs: state PARKED, its facts
        as result. On a Redis backend one ``SET NX``: it never overwrites the result of
        a worker that was faster, and it publishes nothing (no caller waits for a state
        that is not final), where ``store_result`` reads, writes and publishes."""
        backend = self.backend
        if not isinstance(backend, RedisBackend):
            backend.store_result(task_id, facts, PARKED)
            return
        meta: dict[str, Any] = {"status": PARKED, "result": dict(facts), "traceback": None}
        meta |= {"children": [], "date_done": None, "task_id": task_id}
        expires_s = int(backend.expires) if backend.expires else None
        backend.client.set(
            backend.get_key_for_task(task_id), backend.encode(meta), ex=expires_s, nx=True
        )

    def _send_options(
        self, link: Any, link_error: Any, shadow: str | None, options: Mapping[str, Any]
    ) -> dict[str, Any]:
        """The options a later publish needs, fixed now: callbacks, the parent (when
        sent from a task) and an absolute expiry."""
        sent = {k: v for k, v in options.items() if v is not None}
        for name, value in (("link", link), ("link_error", link_error)):
            if value is not None:
                sent[name] = list(value) if isinstance(value, list | tuple) else [value]
        if shadow is not None:
            sent["shadow"] = shadow
        expires = sent.get("expires")
        if isinstance(expires, int | float):
            expires = datetime.now(UTC) + timedelta(seconds=expires)
        if isinstance(expires, datetime):
            sent["expires"] = expires.isoformat()
        parent = self.app.current_worker_task
        if parent is not None and parent.request.id:
            sent.setdefault("parent_id", parent.request.id)
            sent.setdefault("root_id", parent.request.root_id or parent.request.id)
        return sent

    def _park(self, context: WorkerContext, outcome: Parked, kwargs: Mapping[str, Any]) -> None:
        payload = {**self._payload(kwargs, outcome.state), "slot_ms": outcome.slot_ms}
        # One entry per park: a task parked again before the dispatcher forgot its
        # previous entry must not lose its new payload.
        entry_id = f"{self.request.id}.{outcome.state.parks}"
        context.parking.park(outcome.group, entry_id, outcome.slot_ms, payload)
        facts = {
            "group": outcome.group,
            "slot_in_s": round(outcome.wait_s, 3),
            **outcome.state.facts(),
            "slot_ms": outcome.slot_ms,
        }
        self.update_state(state=PARKED, meta=facts)
        self.send_event("task-parked", result=repr(facts), **facts)
