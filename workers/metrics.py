"""Prometheus metrics from workers: admissions, parks, 429s, tokens, waits, AIMD rate.

Design (correct with several worker processes):

* Each worker (its main process) serves its own ``/metrics`` endpoint from a bootstep,
  :class:`MetricsStep`, when ``LLM_THROTTLE_METRICS_PORT`` is set: ``N > 0`` serves on
  port ``N``; ``0`` lets the OS pick a free port, which is logged (at WARNING, so it
  shows at Celery's default level). Unset or empty: no endpoint. Several workers on one
  host need one port each (give each worker its own value); Prometheus scrapes every
  endpoint and sums with ``sum by (group)``.
* Within one worker, the recording happens in whichever process runs the task (prefork
  children, or the main process for the threads/solo pools). The step therefore always
  uses prometheus-client's multiprocess mode with a fresh directory of its own
  (``PROMETHEUS_MULTIPROC_DIR`` is set before the pool forks, overriding any inherited
  value so two workers never read each other's files), and the endpoint aggregates the
  files of the worker's own processes. One design for every pool; no shared directory
  between workers, so no double counting across endpoints.
* Recording never fails a task: every call is wrapped and a failure is logged once.

The runner calls the module-level functions (:func:`admitted`, :func:`parked`,
:func:`rate_limited`, :func:`settled`, :func:`waited`); they record into
:func:`metrics`, built on first use.

``prometheus_client`` comes with the ``ops`` extra. Without it the recording functions
do nothing, and a worker asked to serve ``/metrics`` refuses to start, saying which
package is missing.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from typing import Any, ParamSpec

from celery import bootsteps

from throttle.errors import ConfigError

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
except ImportError:  # the ops extra is not installed: record nothing
    AVAILABLE = False
else:
    AVAILABLE = True

log = logging.getLogger(__name__)

PORT_ENV = "LLM_THROTTLE_METRICS_PORT"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

#: Throttle waits per task, seconds: from sub-second sleeps to long parks.
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)


@dataclass(frozen=True)
class Metrics:
    admissions: Counter
    parks: Counter
    rate_limited: Counter
    reserved: Counter
    started: Counter
    settled: Counter
    waits: Histogram
    multiplier: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry | None) -> Metrics:
        """``registry=None`` in multiprocess mode (the collector reads the files)."""
        kw: dict[str, Any] = {"registry": registry}
        return cls(
            admissions=Counter(
                "llm_throttle_admissions", "Reservations admitted by the limiter", ["group"], **kw
            ),
            parks=Counter("llm_throttle_parks", "Tasks parked until their slot", ["group"], **kw),
            rate_limited=Counter(
                "llm_throttle_provider_429s", "Provider rate-limit answers (429)", ["group"], **kw
            ),
            reserved=Counter(
                "llm_throttle_reserved",
                "Cost reserved at admission (tokens, requests, ...)",
                ["group", "dimension"],
                **kw,
            ),
            started=Counter(
                "llm_throttle_started_cost",
                "Cost reserved at admission by lane and tenant (a tenant with its own plan by"
                " name, any other 'other'); its rate over the group's is the share used",
                ["group", "lane", "tenant", "dimension"],
                **kw,
            ),
            settled=Counter(
                "llm_throttle_settled",
                "Cost actually used, as settled after the call",
                ["group", "dimension"],
                **kw,
            ),
            waits=Histogram(
                "llm_throttle_wait_seconds",
                "Throttle wait of a completed task (sleeps, leases and the fair queue), by"
                " lane and tenant (a tenant with its own plan by name, any other 'other')",
                ["group", "lane", "tenant"],
                buckets=WAIT_BUCKETS,
                **kw,
            ),
            multiplier=Gauge(
                "llm_throttle_adaptive_multiplier",
                "AIMD rate multiplier of the group, as last seen by this worker",
                ["group"],
                multiprocess_mode="mostrecent",
                **kw,
            ),
        )


_lock = threading.Lock()
_metrics: Metrics | None = None
_warned = False


def metrics() -> Metrics | None:
    """This process's metrics (multiprocess files if the step set the directory up);
    None without prometheus_client."""
    global _metrics
    if _metrics is None and AVAILABLE:
        with _lock:
            if _metrics is None:
                multiprocess = bool(os.environ.get(MULTIPROC_ENV))
                _metrics = Metrics.create(None if multiprocess else CollectorRegistry())
    return _metrics


def reset_for_tests(registry: CollectorRegistry) -> Metrics:
    """Record into fresh metrics on ``registry`` (unit tests)."""
    global _metrics
    with _lock:
        _metrics = Metrics.create(registry)
    return _metrics


P = ParamSpec("P")


def _safe(fn: Callable[P, None]) -> Callable[P, None]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        global _warned
        try:
            fn(*args, **kwargs)
        except Exception:  # metrics must never fail a task
            if not _warned:
                _warned = True
                log.exception("recording metrics failed (logged once)")

    return wrapper


# -- the recording API ------------------------------------------------------------------


@_safe
def admitted(group: str, costs: Mapping[str, float], lane: str = "", tenant: str = "") -> None:
    """``tenant``: the label, bounded by the caller (see :func:`tenant_label`); a
    tenant's own dimensions are left out of the per-tenant count."""
    m = metrics()
    if m is None:
        return
    m.admissions.labels(group).inc()
    for dimension, cost in costs.items():
        if cost > 0:
            m.reserved.labels(group, dimension).inc(cost)
            if not dimension.startswith("tenant."):
                m.started.labels(group, lane, tenant, dimension).inc(cost)


@_safe
def parked(group: str) -> None:
    m = metrics()
    if m is not None:
        m.parks.labels(group).inc()


@_safe
def rate_limited(group: str, multiplier: float | None) -> None:
    m = metrics()
    if m is None:
        return
    m.rate_limited.labels(group).inc()
    if multiplier is not None:
        m.multiplier.labels(group).set(multiplier)


@_safe
def settled(
    group: str,
    reserved: Mapping[str, float],
    deltas: Mapping[str, float],
    multiplier: float | None,
) -> None:
    """``deltas`` are actual minus reserved, per dimension (what the limiter settles)."""
    m = metrics()
    if m is None:
        return
    for dimension in reserved.keys() | deltas.keys():
        used = reserved.get(dimension, 0.0) + deltas.get(dimension, 0.0)
        if used > 0:
            m.settled.labels(group, dimension).inc(used)
    if multiplier is not None:
        m.multiplier.labels(group).set(multiplier)


@_safe
def waited(group: str, seconds: float, lane: str = "", tenant: str = "") -> None:
    """``tenant``: the label, bounded by the caller (see :func:`tenant_label`)."""
    m = metrics()
    if m is not None:
        m.waits.labels(group, lane, tenant).observe(max(0.0, seconds))


def tenant_label(tenant: str | None, named: Container[str]) -> str:
    """A tenant's metrics label: its name when it has its own plan (a bounded set),
    ``other`` for every tenant on the default plan (ten thousand tenants must not make
    ten thousand series), ``""`` without a tenant."""
    if tenant is None:
        return ""
    return tenant if tenant in named else "other"


# -- the endpoint -----------------------------------------------------------------------


def configured_port(env: Mapping[str, str] | None = None) -> int | None:
    """The port from ``LLM_THROTTLE_METRICS_PORT``; None when unset (disabled)."""
    raw = (os.environ if env is None else env).get(PORT_ENV, "").strip()
    if not raw:
        return None
    port = int(raw)
    if not 0 <= port <= 65535:
        raise ValueError(f"{PORT_ENV}={raw!r} is not a port")
    return port


def _use_multiprocess_dir(path: str) -> None:
    """Point prometheus-client at ``path``, even if it was imported already."""
    os.environ[MULTIPROC_ENV] = path
    from prometheus_client import values

    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


class MetricsStep(bootsteps.StartStopStep):
    """Serves ``/metrics`` for this worker and its pool processes (see module doc)."""

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.port: int | None = None
        self.directory: str | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def include_if(self, worker: Any) -> bool:
        if configured_port() is None:
            return False
        if not AVAILABLE:
            raise ConfigError(
                f"{PORT_ENV} is set but prometheus_client is not installed:"
                " pip install 'llm-throttle[ops]', or unset it"
            )
        return True

    def create(self, worker: Any) -> MetricsStep:
        # Runs before the pool starts: children inherit the directory.
        self.directory = tempfile.mkdtemp(prefix="llm-throttle-metrics-")
        _use_multiprocess_dir(self.directory)
        return self

    def start(self, worker: Any) -> None:
        from prometheus_client import start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        assert self.directory is not None
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
        port = configured_port() or 0
        addr = os.environ.get("LLM_THROTTLE_METRICS_ADDR", "0.0.0.0")
        self._server, self._thread = start_http_server(port, addr=addr, registry=registry)
        self.port = int(self._server.server_address[1])
        log.warning(
            "llm-throttle metrics for %s on http://%s:%d/metrics",
            getattr(worker, "hostname", "worker"),
            addr,
            self.port,
        )

    def stop(self, worker: Any) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def shutdown(self, worker: Any) -> None:
        self.stop(worker)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
