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
subcommand, so ``import tools.cli`` stays free of Celery.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO, Any

from throttle.config import Config
from throttle.errors import StorageError, ThrottleError
from tools.batch_file import (
    MARKER_PREFIX,
    BatchRequest,
    LineError,
    check_resume,
    choose_provider,
    error_record,
    file_identity,
    parse_input,
    ready_prefix,
    result_record,
    split_complete_records,
    task_id_for,
)
from tools.batch_progress import Throughput, format_progress


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
    config: Config,
    progress: IO[str] | None = None,
    poll_s: float = 0.2,
) -> int:
    """Run a batch file to completion (or resume it) through a Celery app made for
    ``config``; returns the exit code."""
    from celery.result import AsyncResult

    from tasks.completion import enqueue
    from throttle.connect import connect
    from workers.app import create_app

    out = progress if progress is not None else sys.stderr
    celery_app = create_app(config)
    celery_app.set_current()
    celery_app.set_default()
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
        celery_app.close()
    if interactive:
        out.write("\n")
    out.write(f"{total} lines: {total - errors} results, {errors} errors -> {output_path}\n")
    return 0
