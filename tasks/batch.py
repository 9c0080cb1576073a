"""Batch runner: ``llm-throttle run requests.jsonl -o results.jsonl``.

Input is the OpenAI batch input format, one JSON object per line::

    {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-4o-mini", "messages": [...], "max_tokens": 100}}

Output has one JSON object per input line, in input order::

    {"custom_id": "r1", "response": {"status_code": 200, "request_id": ..., "body": ...,
                                     "usage": ..., "throttle": ...}}
    {"custom_id": "r2", "error": {"line": 2, "message": "UnknownGroupError: ..."}}

Design (restart safety):

* **Deterministic task ids.** Every line's Celery task id is a UUID5 of the input file's
  identity (SHA-256 of its bytes) and the line's ``custom_id``. A restart on the same
  file computes the same ids and finds the earlier tasks' results in the result backend.
* **Enqueued markers.** Before a line is published, a marker keyed by its task id is
  set (``SET NX``) in the result backend's Redis, with the result expiry as TTL. A
  restart never publishes a line that has a marker or a result: a task still queued or
  running from the killed run is simply waited for, so no line runs twice. Ctrl-C and
  SIGTERM are held back while a marker is set and its message published; only a
  SIGKILL or power loss in that window leaves a marker without a message, and that line
  would then wait forever on restart (delete its ``llm-throttle-batch:<task id>`` key).
* **Append-only output, in order.** A record is appended only when its line and all
  earlier lines are done, then flushed and fsynced. The output is thus always a prefix
  of the final file. On start it is re-read: a torn last line (crash mid-write) is cut
  off, the ``custom_id`` of each complete record is checked against the input (another
  input's output is refused), and the first ``len(records)`` lines are skipped.
* **Malformed lines** (bad JSON, no ``custom_id``, a bad body, a duplicate
  ``custom_id``, or a typed error from :func:`tasks.completion.enqueue` such as an
  unknown model) become error records with their 1-based line number; the others run.

The pure parts (parsing, ids, ordering, resume, progress text) are separate from the
I/O (:func:`run_batch`), and the whole module is imported only by the ``run``
subcommand, so ``import throttle.cli`` stays free of Celery.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from throttle.errors import ConfigError, StorageError, ThrottleError

#: Namespace of the batch task ids (UUID5 of file identity + custom_id).
TASK_ID_NAMESPACE = uuid.UUID("6f1c7c4e-1b0a-4a55-9a43-4d0c2f1b7e21")
#: Prefix of the "already enqueued" marker keys in the result backend's Redis.
MARKER_PREFIX = "llm-throttle-batch:"
CHAT_COMPLETIONS_URL = "/v1/chat/completions"
#: Body keys that are not passed through as provider ``params``.
_BODY_FIELDS = frozenset({"model", "messages", "max_tokens"})


# ------------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class BatchRequest:
    """One well-formed input line."""

    line: int
    custom_id: str
    model: str
    messages: list[Any]
    max_tokens: int
    params: dict[str, Any]


@dataclass(frozen=True)
class LineError:
    """One input line that cannot run; ``custom_id`` is None when the line has none."""

    line: int
    custom_id: str | None
    message: str


def parse_line(line: int, text: str) -> BatchRequest | LineError:
    """Parse one input line (``line`` is 1-based) into a request or an error."""
    try:
        obj = json.loads(text)
    except ValueError as exc:
        return LineError(line, None, f"invalid JSON: {exc}")
    if not isinstance(obj, dict):
        return LineError(line, None, "expected a JSON object")
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return LineError(line, None, "missing custom_id (a non-empty string)")
    method, url = obj.get("method", "POST"), obj.get("url", CHAT_COMPLETIONS_URL)
    if method != "POST":
        return LineError(line, custom_id, f"method must be POST, not {method!r}")
    if url != CHAT_COMPLETIONS_URL:
        return LineError(line, custom_id, f"url must be {CHAT_COMPLETIONS_URL}, not {url!r}")
    body = obj.get("body")
    if not isinstance(body, dict):
        return LineError(line, custom_id, "body must be a JSON object")
    model, messages, max_tokens = body.get("model"), body.get("messages"), body.get("max_tokens")
    if not isinstance(model, str) or not model:
        return LineError(line, custom_id, "body.model must be a non-empty string")
    if not isinstance(messages, list) or not messages:
        return LineError(line, custom_id, "body.messages must be a non-empty list")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return LineError(
            line, custom_id, f"body.max_tokens must be a positive integer: {max_tokens!r}"
        )
    params = {k: v for k, v in body.items() if k not in _BODY_FIELDS}
    return BatchRequest(line, custom_id, model, messages, max_tokens, params)


def parse_input(lines: Iterable[str]) -> list[BatchRequest | LineError]:
    """Parse every non-blank line; a repeated ``custom_id`` is an error on the later line."""
    entries: list[BatchRequest | LineError] = []
    first_line_of: dict[str, int] = {}
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        entry = parse_line(number, text)
        custom_id = entry.custom_id
        if custom_id is not None:
            if custom_id in first_line_of:
                entry = LineError(
                    number,
                    custom_id,
                    f"duplicate custom_id {custom_id!r} (first on line {first_line_of[custom_id]})",
                )
            else:
                first_line_of[custom_id] = number
        entries.append(entry)
    return entries


def file_identity(data: bytes) -> str:
    """The input file's identity: SHA-256 of its bytes (hex)."""
    return hashlib.sha256(data).hexdigest()


def task_id_for(file_id: str, custom_id: str) -> str:
    """The Celery task id of one line: the same for the same file and custom_id."""
    return str(uuid.uuid5(TASK_ID_NAMESPACE, f"{file_id}\0{custom_id}"))


def error_record(entry: LineError | BatchRequest, message: str) -> dict[str, Any]:
    return {"custom_id": entry.custom_id, "error": {"line": entry.line, "message": message}}


def result_record(request: BatchRequest, task_id: str, result: Mapping[str, Any]) -> dict[str, Any]:
    """The output record of a completed task (its result dict from the worker)."""
    return {
        "custom_id": request.custom_id,
        "response": {
            "status_code": 200,
            "request_id": task_id,
            "body": result.get("response"),
            "usage": result.get("usage"),
            "throttle": result.get("throttle"),
        },
    }


def choose_provider(configured: Sequence[str], requested: str | None) -> str:
    """``requested`` if configured; else the only configured provider; else an error."""
    if requested is not None:
        if requested not in configured:
            known = ", ".join(sorted(configured)) or "none"
            raise ConfigError(f"--provider: {requested!r} is not configured (configured: {known})")
        return requested
    if len(configured) != 1:
        known = ", ".join(sorted(configured)) or "none"
        raise ConfigError(f"--provider is required when not exactly one is configured ({known})")
    return configured[0]


def split_complete_records(text: str) -> tuple[list[dict[str, Any]], int]:
    """The complete records of an output file and the byte-free character length of that
    complete prefix (a torn last line, without newline or not JSON, is excluded)."""
    records: list[dict[str, Any]] = []
    kept_chars = 0
    for chunk in text.splitlines(keepends=True):
        if not chunk.endswith("\n"):
            break
        try:
            record = json.loads(chunk)
        except ValueError:
            break
        if not isinstance(record, dict):
            break
        records.append(record)
        kept_chars += len(chunk)
    return records, kept_chars


def check_resume(
    entries: Sequence[BatchRequest | LineError], records: Sequence[Mapping[str, Any]]
) -> None:
    """Raise ConfigError if the output's records are not a prefix of this input's."""
    if len(records) > len(entries):
        raise ConfigError(f"the output has {len(records)} records, the input {len(entries)} lines")
    for entry, record in zip(entries, records, strict=False):
        if record.get("custom_id") != entry.custom_id:
            raise ConfigError(
                f"the output does not belong to this input: record for line {entry.line} has "
                f"custom_id {record.get('custom_id')!r}, the input {entry.custom_id!r}"
            )


def ready_prefix(next_index: int, finished: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Pop and return the records from ``next_index`` on that are finished, in order,
    up to the first unfinished one."""
    out: list[dict[str, Any]] = []
    while next_index in finished:
        out.append(finished.pop(next_index))
        next_index += 1
    return out


@dataclass
class Throughput:
    """Completions per second over the last ``window_s`` seconds."""

    window_s: float = 10.0
    _events: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, now_s: float, count: int) -> None:
        if count:
            self._events.append((now_s, count))
        while self._events and self._events[0][0] < now_s - self.window_s:
            self._events.popleft()

    def rate_per_s(self, now_s: float, started_s: float) -> float:
        # At least a second: the first records of a resumed run land all at once.
        span_s = max(1.0, min(self.window_s, now_s - started_s))
        return sum(c for t, c in self._events if t >= now_s - self.window_s) / span_s


def format_duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_progress(done: int, total: int, errors: int, rate_per_s: float, width: int = 24) -> str:
    """``[#####-----] 120/200 60% 3 errors 12.5/s ETA 0:06``."""
    fraction = done / total if total else 1.0
    filled = int(fraction * width)
    eta = format_duration((total - done) / rate_per_s) if rate_per_s > 0 else "?"
    if done >= total:
        eta = "0:00"
    return (
        f"[{'#' * filled}{'-' * (width - filled)}] {done}/{total} {fraction:4.0%} "
        f"{errors} errors {rate_per_s:.1f}/s ETA {eta}"
    )


# ------------------------------------------------------------------- I/O


def _exception_message(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _read_output(path: Path) -> list[dict[str, Any]]:
    """Re-read the output; cut a torn last line off the file."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    records, kept_chars = split_complete_records(text)
    kept_bytes = len(text[:kept_chars].encode("utf-8"))
    if kept_bytes != len(raw):
        with path.open("r+b") as handle:
            handle.truncate(kept_bytes)
    return records


def run_batch(
    input_path: Path,
    output_path: Path,
    *,
    provider: str | None,
    progress: IO[str] | None = None,
    poll_s: float = 0.2,
) -> int:
    """Run a batch file to completion (or resume it); returns the exit code."""
    from celery.result import AsyncResult

    from tasks.completion import enqueue
    from throttle.connect import connect
    from workers.app import app as celery_app
    from workers.app import app_config

    out = progress if progress is not None else sys.stderr
    config = app_config(celery_app)
    celery_app.set_current()
    provider_name = choose_provider(list(config.providers), provider)

    data = input_path.read_bytes()
    file_id = file_identity(data)
    entries = parse_input(data.decode("utf-8", errors="replace").splitlines())
    records = _read_output(output_path)
    check_resume(entries, records)
    next_index = len(records)
    errors = sum("error" in r for r in records)

    backend = connect(config.result_backend, what="celery.result_backend")
    marker_ttl_s = max(1, int(config.celery.result_expires_s))
    finished: dict[int, dict[str, Any]] = {}
    pending: dict[int, AsyncResult] = {}

    def submit(index: int, request: BatchRequest) -> None:
        """Enqueue one line unless an earlier run did (its result or marker exists)."""
        task_id = task_id_for(file_id, request.custom_id)
        result = AsyncResult(task_id, app=celery_app)
        marker = MARKER_PREFIX + task_id
        if result.state == "PENDING" and backend.set(
            marker, provider_name, nx=True, ex=marker_ttl_s
        ):
            try:
                enqueue(
                    provider=provider_name,
                    model=request.model,
                    messages=request.messages,
                    max_tokens=request.max_tokens,
                    params=request.params or None,
                    metadata={"custom_id": request.custom_id, "batch": file_id[:16]},
                    task_id=task_id,
                )
            except StorageError:
                backend.delete(marker)
                raise
            except ThrottleError as exc:
                backend.delete(marker)
                finished[index] = error_record(request, _exception_message(exc))
                return
        pending[index] = result

    total = len(entries)
    started_s = time.monotonic()
    meter = Throughput()
    last_shown_s = 0.0
    interactive = out.isatty()
    try:
        for index in range(next_index, total):
            entry = entries[index]
            if isinstance(entry, LineError):
                finished[index] = error_record(entry, entry.message)
                continue
            # Ctrl-C waits until the marker and the message agree (both set or neither).
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
            try:
                submit(index, entry)
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
        with output_path.open("a", encoding="utf-8") as sink:
            while True:
                for index, result in list(pending.items()):
                    if not result.ready():
                        continue
                    entry = entries[index]
                    assert isinstance(entry, BatchRequest)
                    if result.successful():
                        finished[index] = result_record(entry, result.id, result.result)
                    else:
                        finished[index] = error_record(entry, _exception_message(result.result))
                    del pending[index]
                ready = ready_prefix(next_index, finished)
                if ready:
                    sink.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in ready)
                    sink.flush()
                    os.fsync(sink.fileno())
                    next_index += len(ready)
                    errors += sum("error" in r for r in ready)
                now_s = time.monotonic()
                meter.add(now_s, len(ready))
                complete = next_index >= total
                if complete or now_s - last_shown_s >= (0.5 if interactive else 2.0):
                    line = format_progress(
                        next_index, total, errors, meter.rate_per_s(now_s, started_s)
                    )
                    out.write(("\r" + line) if interactive else (line + "\n"))
                    out.flush()
                    last_shown_s = now_s
                if complete:
                    break
                time.sleep(poll_s)
    except KeyboardInterrupt:
        out.write(f"\ninterrupted at {next_index}/{total}; run the same command to resume\n")
        return 130
    finally:
        backend.close()
    if interactive:
        out.write("\n")
    out.write(f"{total} lines: {total - errors} results, {errors} errors -> {output_path}\n")
    return 0
