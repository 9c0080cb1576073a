"""Public task API that web apps import: ``enqueue`` (validates, then queues), its
asyncio form ``aenqueue`` (an awaitable result), and the ``complete`` Celery task."""

from __future__ import annotations

from tasks.aio import AwaitableResult, aenqueue
from tasks.completion import complete, enqueue

__all__ = ["AwaitableResult", "aenqueue", "complete", "enqueue"]
