"""What a worker process's threads share to run completions: one provider client per
(provider, credential), and the places for threads that sleep on slots."""

from __future__ import annotations

import threading

from throttle.config import ProviderSettings
from throttle.providers.client import ProviderClient, Timeouts


class SleeperGate:
    """Caps how many threads of one worker process sleep on slots at once, so a
    saturated group never fills the whole pool (no head-of-line blocking)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self._count = 0
        self._lock = threading.Lock()

    def try_enter(self) -> bool:
        with self._lock:
            if self._count >= self.capacity:
                return False
            self._count += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._count -= 1


class ClientPool:
    """One provider client per (provider, credential) in this process."""

    def __init__(self, pool_size: int = 16) -> None:
        self.pool_size = pool_size
        self._clients: dict[tuple[str, str | None], ProviderClient] = {}
        self._lock = threading.Lock()

    def get(self, settings: ProviderSettings, credential: str | None) -> ProviderClient:
        name = credential or settings.credential
        key = (settings.name, name)
        client = self._clients.get(key)
        if client is None:
            with self._lock:
                client = self._clients.get(key)
                if client is None:
                    client = ProviderClient(
                        settings.resolved_profile(),
                        settings.base_url,
                        name,
                        timeouts=Timeouts(settings.connect_timeout_s, settings.read_timeout_s),
                        pool_size=self.pool_size,
                    )
                    self._clients[key] = client
        return client

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._clients.clear()
