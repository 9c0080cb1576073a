"""One completion call's provider request: built (and checked) before anything is
reserved for it, and sent once, streamed or not."""

from __future__ import annotations

import dataclasses
from typing import Any

from throttle.errors import InvalidRequestError
from throttle.providers.client import ProviderClient, ProviderResponse
from throttle.providers.request import HttpRequest
from throttle.providers.streaming import check_streamable
from workers.run_state import CompletionCall, EventSink


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
