"""What a worker process's threads share to run completions: one provider client per
(provider, credential), and the places for threads that sleep on slots."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from throttle.config import ProviderSettings
from throttle.errors import InvalidRequestError
from throttle.providers.client import ProviderClient, ProviderResponse, Timeouts
from throttle.providers.request import HttpRequest
from throttle.providers.streaming import check_streamable
from workers.run_state import CompletionCall, EventSink


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


def build_request(client: ProviderClient, call: CompletionCall) -> HttpRequest:
    """The provider's request for ``call``; InvalidRequestError before anything is
    reserved for one that cannot be sent."""
    if not isinstance(call.max_tokens, int) or call.max_tokens < 1:
        raise InvalidRequestError(f"max_tokens must be a positive integer: {call.max_tokens!r}")
    request = client.build(
        model=call.model, messages=call.messages, max_tokens=call.max_tokens, **call.params
    )
    if call.stream:
        check_streamable(client.profile)
    if call.request_id:
        headers = {**request.headers, "x-client-request-id": call.request_id}
        request = dataclasses.replace(request, headers=headers)
    return request


def send(
    call: CompletionCall, client: ProviderClient, request: Any, sink: EventSink | None
) -> ProviderResponse:
    """Send ``request`` once; a streamed call's events go to ``sink``."""
    if call.stream:
        return client.stream(request, sink or (lambda _events: None))
    return client.send(request)
