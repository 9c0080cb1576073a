"""Public task API that web apps import: ``enqueue`` (validates, then queues) and the
``complete`` Celery task itself."""

from __future__ import annotations

from tasks.completion import complete, enqueue

__all__ = ["complete", "enqueue"]
