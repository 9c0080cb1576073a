"""Reading a streamed task's relay stream (workers/relay.py) as entries arrive."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from gateway.errors import GatewayError


async def relay_entries(
    client: Any, key: str, timeout_s: float, block_ms: int = 1000
) -> AsyncIterator[tuple[str, Any]]:
    """Yield ``("d", bytes)`` for each relayed read, then one ``("end", facts)`` or
    ``("error", error)``; GatewayError 504 if nothing ends it within ``timeout_s``."""
    last_id = "0-0"
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        left_ms = int((deadline - asyncio.get_running_loop().time()) * 1000)
        if left_ms <= 0:
            raise GatewayError(504, "timed out waiting for the completion", "server_error")
        reply = await client.xread({key: last_id}, count=100, block=min(block_ms, left_ms))
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                last_id = entry_id
                for name, value in fields.items():
                    kind = name.decode() if isinstance(name, bytes) else name
                    if kind == "d":
                        yield "d", value
                    else:
                        yield kind, json.loads(value)
                        if kind in ("end", "error"):
                            return
