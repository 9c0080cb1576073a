"""The HTTP client: one completion against one provider, with transport retries only.

What it retries, inside one :meth:`ProviderClient.complete` call, with jittered
exponential backoff bounded in attempts and total time (:mod:`~.retry`):

* transport failures: connection refused or dropped, timeouts, truncated bodies;
* 5xx and Anthropic 529 (:class:`~throttle.errors.OverloadedError`), honouring a
  ``retry-after`` up to :attr:`TransportRetry.max_wait_s`; a longer one is raised to the
  throttle, which can park the task instead of holding a worker thread.

What it never retries: 429s. They are raised as :class:`~throttle.errors.RateLimitedError`
with ``wait_s`` and the parsed :class:`~.observation.Observation` attached
(``exc.observation``), because the throttle owns them: it pauses the whole limit group
and re-slots the task. Terminal errors (quota, too large, 4xx) are raised typed, at once.

The caller only ever sees :mod:`throttle.errors` exceptions, never ``requests`` or
tenacity ones, and no exception, log line or ``repr`` contains the API key: keys live
in a :class:`~.credentials.Secret`, are revealed only into the outgoing headers, and
any text that came back from the wire is scrubbed of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from throttle.errors import (
    ClientRequestError,
    ConfigError,
    ProviderError,
    StreamBrokenError,
    TransportError,
)
from throttle.providers.classify import DEFAULT_POLICY, ClassifyPolicy
from throttle.providers.credentials import Secret, load_credential, redact
from throttle.providers.errorbody import decode_json
from throttle.providers.headers import HeaderView
from throttle.providers.observation import Observation
from throttle.providers.profile import Profile
from throttle.providers.registry import get_profile
from throttle.providers.request import HttpRequest, Message
from throttle.providers.retry import DEFAULT_RETRY, TransportRetry
from throttle.providers.sse import SseEvent, SseParser
from throttle.providers.streaming import StreamError, StreamTally, streaming_request
from throttle.providers.usage import Usage

# TransportRetry lives in :mod:`~.retry`; it is still importable from here.
__all__ = ["USER_AGENT", "ProviderClient", "ProviderResponse", "Timeouts", "TransportRetry"]

logger = logging.getLogger(__name__)

USER_AGENT = "llm-throttle/0.1"


@dataclass(frozen=True)
class Timeouts:
    """Connect and read timeouts, in seconds. ``read_s`` bounds each socket read."""

    connect_s: float = 5.0
    read_s: float = 120.0


@dataclass(frozen=True)
class ProviderResponse:
    """A successful completion.

    ``body`` (the decoded JSON, which holds the model's answer) is kept out of the
    ``repr``. ``elapsed_s`` covers the last attempt only; ``attempts`` counts them all.
    """

    status: int
    body: Mapping[str, object] = field(repr=False)
    usage: Usage | None
    observation: Observation
    elapsed_s: float
    attempts: int = 1
    request_id: str | None = None


class ProviderClient:
    """Sends completions to one provider endpoint with one credential.

    Parameters:
        profile: a :class:`~.profile.Profile` or a registry name (``"openai"``).
        base_url: scheme, host and optional prefix, without ``/v1``
            (``http://127.0.0.1:8080``); defaults to the profile's public endpoint.
        credential: a credential *name* resolved on this worker (see
            :mod:`~.credentials`), a :class:`Secret`, or ``None`` for keyless servers.
        timeouts: connect and read timeouts.
        retry: bounds of transport retries.
        pool_size: connections kept per host; size it to the worker's thread pool.
        policy: classification knobs (the day-long-wait threshold).
        environ: where to look credentials up (defaults to ``os.environ``).
        sleep, clock, monotonic: injectable for tests (``clock`` is wall-clock epoch
            seconds, used to date observations).

    Thread-safe: one instance may serve every thread of a worker.
    """

    def __init__(
        self,
        profile: Profile | str,
        base_url: str | None = None,
        credential: str | Secret | None = None,
        *,
        timeouts: Timeouts = Timeouts(),
        retry: TransportRetry = DEFAULT_RETRY,
        pool_size: int = 16,
        policy: ClassifyPolicy = DEFAULT_POLICY,
        environ: Mapping[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        url = base_url or self.profile.default_base_url
        if not url:
            raise ConfigError(f"provider {self.profile.name!r} needs a base_url")
        self.base_url = url
        if isinstance(credential, str):
            self._key: Secret | None = load_credential(credential, environ=environ)
        else:
            self._key = credential
        if self._key is None and self.profile.requires_key:
            raise ConfigError(f"provider {self.profile.name!r} needs a credential")
        self.credential_name = credential if isinstance(credential, str) else None
        if pool_size < 1:
            raise ConfigError("pool_size must be >= 1")
        self.timeouts = timeouts
        self.retry = retry
        self.policy = policy
        self._sleep = sleep
        self._clock = clock
        self._monotonic = monotonic
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["user-agent"] = USER_AGENT

    def __repr__(self) -> str:
        return (
            f"ProviderClient({self.profile.name!r}, {self.base_url!r},"
            f" credential={self.credential_name!r})"
        )

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> ProviderClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def build(
        self, *, model: str, messages: Sequence[Message], max_tokens: int, **params: object
    ) -> HttpRequest:
        """The request :meth:`complete` would send (the key inside stays masked)."""
        return self.profile.build_request(
            base_url=self.base_url,
            model=model,
            messages=messages,
            max_tokens=max_tokens,
            params=params,
            api_key=self._key,
        )

    def complete(
        self, *, model: str, messages: Sequence[Message], max_tokens: int, **params: object
    ) -> ProviderResponse:
        """Run one completion; raises a :class:`~throttle.errors.ProviderError` subclass."""
        request = self.build(model=model, messages=messages, max_tokens=max_tokens, **params)
        return self.send(request)

    def send(self, request: HttpRequest) -> ProviderResponse:
        """Send ``request``, retrying transport errors and 5xx within :attr:`retry`."""
        return self.retry.run(
            lambda attempt: self._attempt(request, attempt),
            name=self.profile.name,
            sleep=self._sleep,
        )

    def stream(
        self, request: HttpRequest, on_events: Callable[[Sequence[SseEvent]], None]
    ) -> ProviderResponse:
        """Send ``request`` asking for a stream (:func:`~.streaming.streaming_request`)
        and pass its events to ``on_events`` as they arrive (those of one read
        together). Errors before the first event are those of :meth:`send`, retried
        the same way (a 429 is raised to the throttle); once events were passed on, a
        failure is a :class:`~throttle.errors.StreamBrokenError`, never retried. The
        response's ``body`` is what the events add up to, with the usage."""
        request = streaming_request(self.profile, request)
        return self.retry.run(
            lambda attempt: self._attempt_stream(request, attempt, on_events),
            name=self.profile.name,
            sleep=self._sleep,
        )

    def _scrub(self, text: str) -> str:
        return redact(text, [self._key] if self._key is not None else [])

    def _transport_error(
        self, request: HttpRequest, exc: requests.RequestException
    ) -> TransportError:
        # raise it ``from None``: the requests exception holds the sent headers, key
        # included.
        path = urlsplit(request.url).path
        detail = self._scrub(str(exc))[:300]
        return TransportError(
            f"{self.profile.name}: {request.method} {path} failed: {type(exc).__name__}: {detail}"
        )

    def _attempt_stream(
        self,
        request: HttpRequest,
        attempt: int,
        on_events: Callable[[Sequence[SseEvent]], None],
    ) -> ProviderResponse:
        started = self._monotonic()
        response = self._send(request, stream=True)
        with response:
            if not 200 <= response.status_code < 300:
                try:
                    content = response.content
                except requests.RequestException as exc:
                    raise self._transport_error(request, exc) from None
                return self._answer(request, response, content, started, attempt)
            received_at = self._clock()
            headers = HeaderView(list(response.headers.items()))
            observation = self.profile.parse_headers(headers, received_at=received_at)
            tally, parser, relayed = StreamTally(self.profile), SseParser(), False
            try:
                for data in response.iter_content(chunk_size=None):
                    events = parser.feed(data)
                    for event in events:
                        tally.add(event)
                    if events:
                        on_events(events)
                        relayed = True
            except (requests.RequestException, StreamError) as exc:
                detail = self._scrub(str(exc))[:300]
                message = f"{self.profile.name}: stream failed: {type(exc).__name__}: {detail}"
                if not relayed and isinstance(exc, requests.RequestException):
                    raise TransportError(message) from None
                raise StreamBrokenError(message, status=response.status_code) from None
            if not tally.done:
                message = f"{self.profile.name}: stream ended before its last event"
                if not relayed:
                    raise TransportError(message)
                raise StreamBrokenError(message, status=response.status_code)
        body = tally.body()
        return ProviderResponse(
            response.status_code,
            body,
            self.profile.parse_usage(body),
            observation,
            self._monotonic() - started,
            attempt,
            headers.get("x-request-id") or headers.get("request-id"),
        )

    def _attempt(self, request: HttpRequest, attempt: int) -> ProviderResponse:
        started = self._monotonic()
        response = self._send(request, stream=False)
        try:
            content = response.content
        except requests.RequestException as exc:
            raise self._transport_error(request, exc) from None
        return self._answer(request, response, content, started, attempt)

    def _send(self, request: HttpRequest, *, stream: bool) -> requests.Response:
        """One HTTP exchange up to the response's headers (``stream``: the body is read
        as it comes); a transport failure as this client's error."""
        try:
            return self._session.request(
                request.method,
                request.url,
                headers=request.wire_headers(),
                json=dict(request.json),
                timeout=(self.timeouts.connect_s, self.timeouts.read_s),
                allow_redirects=False,
                stream=stream,
            )
        except requests.RequestException as exc:
            raise self._transport_error(request, exc) from None

    def _answer(
        self,
        request: HttpRequest,
        response: requests.Response,
        content: bytes,
        started: float,
        attempt: int,
    ) -> ProviderResponse:
        """The response of a read body: the completion, or its typed error raised."""
        path = urlsplit(request.url).path
        received_at = self._clock()
        elapsed_s = self._monotonic() - started
        status = response.status_code
        headers = HeaderView(list(response.headers.items()))
        observation = self.profile.parse_observation(headers, content, received_at=received_at)
        logger.debug(
            "%s: %s %s -> %d in %.3fs (attempt %d)",
            self.profile.name,
            request.method,
            path,
            status,
            elapsed_s,
            attempt,
        )
        request_id = headers.get("x-request-id") or headers.get("request-id")

        if 200 <= status < 300:
            body = decode_json(content)
            if not isinstance(body, Mapping):
                raise TransportError(
                    f"{self.profile.name}: {status} response is not a JSON object", status=status
                )
            return ProviderResponse(
                status,
                body,
                self.profile.parse_usage(body),
                observation,
                elapsed_s,
                attempt,
                request_id,
            )

        error: ProviderError = self.profile.classify(
            status,
            headers,
            content,
            observation=observation,
            policy=self.policy,
            reference=datetime.fromtimestamp(received_at, UTC),
        ) or ClientRequestError(f"{self.profile.name}: unexpected status {status}", status=status)
        error.args = tuple(self._scrub(str(arg)) for arg in error.args)
        error.observation = observation
        raise error
