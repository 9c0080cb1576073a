"""The Celery app: ``celery -A workers.app worker`` runs throttled LLM tasks.

:func:`create_app` makes an app for a given configuration (the tools, the tests and
anyone holding several deployments call it); ``workers.app.app`` is the default one,
made on first use from :func:`~throttle.config.load_config` (``LLM_THROTTLE_CONFIG``),
which is what ``celery -A workers.app`` finds. Importing this module makes nothing.

Settings that matter for throttling: late acknowledgement and requeue on a lost worker
(a killed worker's tasks run elsewhere), prefetch of one message per pool slot, task
events for Flower, and two queues: new completions on ``<queue>``, parked tasks coming
back before their slot on ``<queue>.released``.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from throttle.config import Config, load_config
from workers.app_config import app_config, bind_config, released_queue
from workers.celery_urls import CeleryUrl, celery_url
from workers.dispatcher import DispatcherStep
from workers.heartbeat import HeartbeatStep
from workers.metrics import MetricsStep
from workers.transport import SENTINEL_TRANSPORT, TRANSPORT


def create_app(config: Config | None = None, *, main: str = "llm_throttle") -> Celery:
    """A Celery app for ``config`` (default: :func:`~throttle.config.load_config`)."""
    config = config or load_config()
    broker = celery_url(config.broker_url, "celery.broker_url")
    backend = celery_url(config.result_backend, "celery.result_backend")
    app = Celery(main, broker=broker.url, backend=backend.url)
    queue = config.celery.queue
    visibility_s = int(config.celery.visibility_timeout_s)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=queue,
        # Released tasks first, always: their slot is now, a new task's can wait.
        task_queues=tuple(
            Queue(name, Exchange(name, type="direct"), routing_key=name)
            for name in (released_queue(config), queue)
        ),
        task_default_exchange=queue,
        task_default_routing_key=queue,
        broker_transport_options={
            "visibility_timeout": visibility_s,
            "queue_order_strategy": "priority",
            # A dead worker's unacknowledged messages come back within visibility
            # timeout + one sweep (kombu's default sweep is every ~100 s).
            "unacked_restore_interval": max(1, min(10, visibility_s // 4)),
            "unacked_restore_throttle": 1,
            **broker.options,
        },
        result_backend_transport_options={"visibility_timeout": visibility_s, **backend.options},
        broker_connection_retry_on_startup=True,
        # kombu's Redis transport, repaired to survive a Redis restart (workers/transport.py)
        **_repaired_transport(broker),
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=int(config.celery.result_expires_s),
        result_extended=True,
        task_send_sent_event=True,
        worker_send_task_events=True,
        imports=("tasks.completion",),
    )
    bind_config(app, config)
    app.steps["worker"].add(DispatcherStep)
    app.steps["worker"].add(MetricsStep)
    app.steps["worker"].add(HeartbeatStep)
    return app


def _repaired_transport(broker: CeleryUrl) -> dict[str, str]:
    if broker.sentinel:
        return {"broker_transport": SENTINEL_TRANSPORT}
    if broker.url.startswith(("redis://", "rediss://")):
        return {"broker_transport": TRANSPORT}
    return {}


__all__ = ["app_config", "create_app", "default_app", "released_queue"]

_default: Celery | None = None
_default_lock = threading.Lock()


def default_app() -> Celery:
    """The process's default app, made once from ``load_config()``: Celery's default
    app from then on (the current app of every thread that has set none), so
    ``tasks.enqueue`` sends through it from any thread."""
    global _default
    with _default_lock:
        if _default is None:
            _default = create_app()
            _default.set_default()
        return _default


def __getattr__(name: str) -> Any:
    """``workers.app.app``: the default app, made when first asked for."""
    if name == "app":
        return default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
