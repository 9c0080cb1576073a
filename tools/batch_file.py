"""The batch file's pure parts: parsing the OpenAI batch input, the lines' task ids,
the output records and the resume check (no I/O; ``tools/batch.py`` runs them)."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from throttle.errors import ConfigError

#: Namespace of the batch task ids (UUID5 of file identity + custom_id).
TASK_ID_NAMESPACE = uuid.UUID("6f1c7c4e-1b0a-4a55-9a43-4d0c2f1b7e21")
#: Prefix of the "already enqueued" marker keys in the result backend's Redis.
MARKER_PREFIX = "llm-throttle-batch:"
CHAT_COMPLETIONS_URL = "/v1/chat/completions"
#: Body keys that are not passed through as provider ``params``.
_BODY_FIELDS = frozenset({"model", "messages", "max_tokens"})


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
