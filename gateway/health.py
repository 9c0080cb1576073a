"""``GET /health``: Redis (the limiter's), the broker, and at least one worker alive.

Workers beat into a sorted set every second (workers/heartbeat.py); the check reads
the newest beat with the server's time in one pipeline. Each check has a short
timeout, and the answer is kept for ``cache_s``, so a dead Redis or the last worker
gone shows within the heartbeat's TTL (3 s) plus the cache.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from workers.heartbeat import alive_until_ms


class Health:
    def __init__(
        self,
        client: Any,
        broker_client: Any | None,
        heartbeat_key: str,
        *,
        timeout_s: float = 1.0,
        cache_s: float = 0.5,
    ) -> None:
        self.client = client
        self.broker_client = broker_client  # None: the broker is on the limiter's Redis
        self.heartbeat_key = heartbeat_key
        self.timeout_s = timeout_s
        self.cache_s = cache_s
        self._cached: tuple[float, bool, dict[str, Any]] | None = None

    async def check(self) -> tuple[bool, dict[str, Any]]:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self.cache_s:
            return self._cached[1], self._cached[2]
        detail: dict[str, Any] = {}
        try:
            async with asyncio.timeout(self.timeout_s):
                pipe = self.client.pipeline(transaction=False)
                pipe.time()
                pipe.zrange(self.heartbeat_key, -1, -1, withscores=True)
                server_time, newest = await pipe.execute()
            detail["redis"] = "ok"
            left_ms = alive_until_ms(server_time, newest)
            detail["workers"] = "ok" if left_ms > 0 else "none alive"
        except Exception as exc:  # redis.asyncio errors, OSError, TimeoutError
            detail["redis"] = f"unreachable: {type(exc).__name__}"
            detail["workers"] = "unknown"
        if self.broker_client is None:
            detail["broker"] = detail["redis"]
        else:
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self.broker_client.ping()
                detail["broker"] = "ok"
            except Exception as exc:
                detail["broker"] = f"unreachable: {type(exc).__name__}"
        ok = all(value == "ok" for value in detail.values())
        self._cached = (now, ok, detail)
        return ok, detail
