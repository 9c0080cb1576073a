"""A single-process client-side limiter in the style of the OpenAI cookbook's
``examples/api_request_parallel_processor.py`` (written from its description, for
``bench/utilization.py``).

What it keeps from the cookbook:

* one process; continuous-refill budgets for requests and tokens, starting full, each
  capped at one window's limit;
* a request costs 1 request and ``prompt estimate + max_tokens`` tokens, taken from the
  budgets when it is sent;
* a 1 ms main loop; failed requests go to a retry queue that is served first, with at
  most :data:`MAX_ATTEMPTS` attempts per request;
* after any rate-limit error, a global pause of 15 s on a 60 s window, without reading
  any header: here ``15 s x window / 60 s`` (0.25 s on 1 s windows).

What differs: threads instead of asyncio (the call is the project's synchronous
``ProviderClient``), and at most ``concurrency`` requests in flight (the cookbook has no
cap; this is the "worker count" of the benchmark).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from throttle.errors import ProviderError, RateLimitedError
from throttle.providers.client import ProviderClient
from throttle.providers.request import Message
from throttle.providers.tokens import TokenEstimator

MAX_ATTEMPTS = 5
LOOP_SLEEP_S = 0.001
#: The cookbook's pause after a rate-limit error, and the window it was written for.
PAUSE_AFTER_429_S = 15.0
COOKBOOK_WINDOW_S = 60.0


@dataclass
class Budget:
    """A continuous-refill budget of ``capacity`` per ``window_s``, starting full."""

    capacity: float
    window_s: float
    level: float = field(init=False)

    def __post_init__(self) -> None:
        self.level = self.capacity

    def refill(self, elapsed_s: float) -> None:
        self.level = min(self.capacity, self.level + self.capacity * elapsed_s / self.window_s)


@dataclass
class Job:
    request_id: str
    tokens: float
    attempts_left: int = MAX_ATTEMPTS


@dataclass
class Tally:
    """What the processor saw; updated from the call threads under ``lock``."""

    succeeded: int = 0
    failed: int = 0
    rate_limit_errors: int = 0
    other_errors: int = 0
    in_flight: int = 0
    last_rate_limit_at_s: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)


class CookbookProcessor:
    """Sends ``count`` identical completions within ``requests_limit``/``tokens_limit``
    per ``window_s``, at most ``concurrency`` at a time."""

    def __init__(
        self,
        client: ProviderClient,
        *,
        model: str,
        messages: Sequence[Message],
        max_tokens: int,
        requests_limit: float,
        tokens_limit: float,
        window_s: float,
        concurrency: int,
    ) -> None:
        self.client = client
        self.model = model
        self.messages = list(messages)
        self.max_tokens = max_tokens
        self.requests = Budget(requests_limit, window_s)
        self.tokens = Budget(tokens_limit, window_s)
        self.pause_s = PAUSE_AFTER_429_S * window_s / COOKBOOK_WINDOW_S
        self.concurrency = concurrency
        self.tally = Tally()
        self._retry_queue: collections.deque[Job] = collections.deque()
        prompt = TokenEstimator().estimate_messages(model, self.messages)
        self._tokens_per_request = float(prompt + max_tokens)

    def run(self, count: int) -> Tally:
        """Process ``count`` requests; returns once every one succeeded or gave up."""
        fresh = (Job(uuid.uuid4().hex, self._tokens_per_request) for _ in range(count))
        remaining_new = count
        pending: Job | None = None
        last_refill_s = time.monotonic()
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            while True:
                if pending is None:
                    if self._retry_queue:
                        pending = self._retry_queue.popleft()
                    elif remaining_new:
                        pending, remaining_new = next(fresh), remaining_new - 1
                now_s = time.monotonic()
                self.requests.refill(now_s - last_refill_s)
                self.tokens.refill(now_s - last_refill_s)
                last_refill_s = now_s
                if pending is not None and self._can_send(pending):
                    self._take(pending)
                    pool.submit(self._call, pending)
                    pending = None
                with self.tally.lock:
                    idle = self.tally.in_flight == 0 and not self._retry_queue
                if idle and pending is None and not remaining_new:
                    return self.tally
                time.sleep(LOOP_SLEEP_S)
                self._pause_after_rate_limit()

    def _can_send(self, job: Job) -> bool:
        return (
            self.requests.level >= 1
            and self.tokens.level >= job.tokens
            and self.tally.in_flight < self.concurrency
        )

    def _take(self, job: Job) -> None:
        self.requests.level -= 1
        self.tokens.level -= job.tokens
        job.attempts_left -= 1
        with self.tally.lock:
            self.tally.in_flight += 1

    def _pause_after_rate_limit(self) -> None:
        since_s = time.monotonic() - self.tally.last_rate_limit_at_s
        if since_s < self.pause_s:
            time.sleep(self.pause_s - since_s)

    def _call(self, job: Job) -> None:
        request = self.client.build(
            model=self.model, messages=self.messages, max_tokens=self.max_tokens
        )
        headers = {**request.headers, "x-client-request-id": job.request_id}
        request = dataclasses.replace(request, headers=headers)
        outcome = "ok"
        try:
            self.client.send(request)
        except RateLimitedError:
            outcome = "rate_limited"
        except ProviderError:
            outcome = "error"
        with self.tally.lock:
            self.tally.in_flight -= 1
            if outcome == "ok":
                self.tally.succeeded += 1
                return
            if outcome == "rate_limited":
                self.tally.rate_limit_errors += 1
                self.tally.last_rate_limit_at_s = time.monotonic()
            else:
                self.tally.other_errors += 1
            if job.attempts_left > 0:
                self._retry_queue.append(job)
            else:
                self.tally.failed += 1
