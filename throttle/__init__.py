"""llm-throttle: distributed throttling of LLM API calls over Redis.

This package is importable without Celery. The Celery side lives in ``workers``; the
public task API in ``tasks``.
"""

from __future__ import annotations
