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

import logging
from collections.abc import Mapping
from typing import Any

from celery import Task
from celery.exceptions import Ignore

from workers.context import worker_context
from workers.publish import kwargs_repr
from workers.runtime import Completed, CompletionCall, Parked, ThrottleState

log = logging.getLogger(__name__)

#: Custom task state shown in Flower while a task waits in the dispatch queue.
PARKED = "PARKED"


class ThrottledTask(Task):
    """Base class of LLM tasks: every call goes through the shared throttle."""

    acks_late = True
    reject_on_worker_lost = True
    #: Error retries are counted in the throttle state, not by Celery.
    max_retries = None

    def run_completion(self, call: CompletionCall, state_json: Mapping[str, Any] | None) -> Any:
        context = worker_context(self.app)
        if state_json:
            state = ThrottleState.from_json(state_json)
        else:
            state = ThrottleState.new(context.config.worker.throttle_deadline_s)
        if state.release is not None:
            # Released from the parked queue: claim the entry, unless another release's
            # copy of this task (released again when it looked lost) has it.
            release, state.release = state.release, None
            celery = context.config.celery
            marker_ttl_s = (
                2 * celery.visibility_timeout_s + context.config.worker.throttle_deadline_s
            )
            if not context.parking.claim(
                release["group"], release["entry"], release["token"], marker_ttl_s=marker_ttl_s
            ):
                log.info("task %s: released twice; this copy is dropped", self.request.id)
                raise Ignore()
        outcome = context.runner.run(call, state)
        if isinstance(outcome, Completed):
            return outcome.result
        kwargs = {k: v for k, v in self.request.kwargs.items() if k != "throttle_state"}
        if isinstance(outcome, Parked):
            payload = {
                "task": self.name,
                "task_id": self.request.id,
                "kwargs": kwargs,
                "state": outcome.state.to_json(),
                "slot_ms": outcome.slot_ms,
            }
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
            # A custom event sets the custom state in event monitors; of its fields Flower
            # shows only Celery's own, so the facts also go as the result, as in the backend.
            self.send_event("task-parked", result=repr(facts), **facts)
            raise Ignore()
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
