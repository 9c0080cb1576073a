"""The batch runner (``llm-throttle run``): pure parsing, ids, ordering and resume logic,
and one end-to-end run that is SIGKILLed halfway and restarted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from throttle.errors import ConfigError
from tools.batch_file import (
    BatchRequest,
    LineError,
    check_resume,
    choose_provider,
    file_identity,
    parse_input,
    parse_line,
    ready_prefix,
    split_complete_records,
    task_id_for,
)
from tools.batch_progress import Throughput, format_progress
from tools.cli import build_parser

REPO_ROOT = Path(__file__).resolve().parent.parent


def request_line(custom_id: str, model: str = "gpt-4o-mini", **body: Any) -> str:
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": f"Say hello to {custom_id}."}],
        "max_tokens": 16,
        **body,
    }
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": payload}
    )


# -- parsing ---------------------------------------------------------------------------


def test_a_well_formed_line_becomes_a_request_with_extra_body_keys_as_params() -> None:
    entry = parse_line(3, request_line("a", temperature=0.2))
    assert isinstance(entry, BatchRequest)
    assert (entry.line, entry.custom_id, entry.model, entry.max_tokens) == (
        3,
        "a",
        "gpt-4o-mini",
        16,
    )
    assert entry.params == {"temperature": 0.2}


@pytest.mark.parametrize(
    ("text", "custom_id", "fragment"),
    [
        ("{not json", None, "invalid JSON"),
        ("[1, 2]", None, "JSON object"),
        ('{"body": {}}', None, "custom_id"),
        ('{"custom_id": "x", "method": "GET", "body": {}}', "x", "POST"),
        ('{"custom_id": "x", "url": "/v1/embeddings", "body": {}}', "x", "url"),
        ('{"custom_id": "x", "body": "hi"}', "x", "body"),
        (
            '{"custom_id": "x", "body": {"messages": [{"role": "user"}], "max_tokens": 1}}',
            "x",
            "model",
        ),
        (
            '{"custom_id": "x", "body": {"model": "m", "messages": [], "max_tokens": 1}}',
            "x",
            "messages",
        ),
        (
            '{"custom_id": "x", "body": {"model": "m", "messages": [{}], "max_tokens": 0}}',
            "x",
            "max_tokens",
        ),
    ],
)
def test_malformed_lines_are_errors_with_their_line_number(
    text: str, custom_id: str | None, fragment: str
) -> None:
    entry = parse_line(7, text)
    assert isinstance(entry, LineError)
    assert entry.line == 7 and entry.custom_id == custom_id
    assert fragment in entry.message


def test_parse_input_skips_blank_lines_keeps_numbers_and_flags_duplicates() -> None:
    lines = [request_line("a"), "", request_line("b"), "{oops", request_line("a")]
    entries = parse_input(lines)
    assert [e.line for e in entries] == [1, 3, 4, 5]
    assert isinstance(entries[0], BatchRequest) and isinstance(entries[1], BatchRequest)
    assert isinstance(entries[2], LineError) and entries[2].custom_id is None
    duplicate = entries[3]
    assert isinstance(duplicate, LineError) and "first on line 1" in duplicate.message


# -- ids, provider ---------------------------------------------------------------------


def test_task_ids_are_deterministic_per_file_and_custom_id() -> None:
    file_a, file_b = file_identity(b"one\n"), file_identity(b"two\n")
    assert task_id_for(file_a, "x") == task_id_for(file_identity(b"one\n"), "x")
    assert len({task_id_for(file_a, "x"), task_id_for(file_a, "y"), task_id_for(file_b, "x")}) == 3


def test_provider_is_the_named_one_or_the_only_one() -> None:
    assert choose_provider(["emu"], None) == "emu"
    assert choose_provider(["a", "b"], "b") == "b"
    with pytest.raises(ConfigError, match="required"):
        choose_provider(["a", "b"], None)
    with pytest.raises(ConfigError, match="not configured"):
        choose_provider(["a"], "c")


# -- ordering and resume ---------------------------------------------------------------


def test_ready_prefix_releases_only_an_unbroken_run_in_order() -> None:
    finished = {2: {"n": 2}, 3: {"n": 3}, 5: {"n": 5}}
    assert ready_prefix(1, finished) == []
    finished[1] = {"n": 1}
    assert ready_prefix(1, finished) == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert finished == {5: {"n": 5}}


def test_a_torn_last_line_is_not_a_record() -> None:
    text = '{"custom_id":"a"}\n{"custom_id":"b"}\n{"custom_id":"c'
    records, kept_chars = split_complete_records(text)
    assert [r["custom_id"] for r in records] == ["a", "b"]
    assert text[:kept_chars].endswith('"b"}\n')
    assert split_complete_records("") == ([], 0)


def test_resume_refuses_an_output_of_another_input() -> None:
    entries = parse_input([request_line("a"), "{bad", request_line("b")])
    check_resume(entries, [{"custom_id": "a"}, {"custom_id": None, "error": {}}])
    with pytest.raises(ConfigError, match="does not belong"):
        check_resume(entries, [{"custom_id": "z"}])
    with pytest.raises(ConfigError, match="records"):
        check_resume(entries, [{"custom_id": "a"}] * 4)


def test_progress_line_has_counts_rate_and_eta() -> None:
    meter = Throughput(window_s=10.0)
    meter.add(101.0, 10)
    meter.add(105.0, 10)
    rate_per_s = meter.rate_per_s(now_s=110.0, started_s=100.0)
    assert rate_per_s == pytest.approx(2.0)
    line = format_progress(20, 200, 1, rate_per_s)
    assert "20/200" in line and "1 errors" in line and "2.0/s" in line and "ETA 1:30" in line
    assert "ETA ?" in format_progress(0, 10, 0, 0.0)
    assert "ETA 0:00" in format_progress(10, 10, 0, 0.0)


def test_the_run_subcommand_parses_without_importing_celery() -> None:
    args = build_parser().parse_args(["run", "in.jsonl", "-o", "out.jsonl", "--provider", "p"])
    assert (args.input, args.output, args.provider) == ("in.jsonl", "out.jsonl", "p")
    code = "import sys, tools.cli; assert 'celery' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)


# -- end to end ------------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.slow
def test_a_batch_killed_halfway_resumes_without_running_a_line_twice(
    stacks: list[Any], tmp_path: Path
) -> None:
    """Issue 6, acceptance 4: 1,000 lines, 3 of them malformed; the runner is SIGKILLed
    part way, restarted, and must end with 997 results and
    3 errors in input order, with the emulator admitting exactly 997 requests (no line
    run twice). At 50 lines/s the run takes 20 s: killed at 300 lines written, it
    still has at least 14 s of lines left (results are written in input order, so a
    slow line holds the ones behind it, but never for seconds)."""
    from testing.emulator import (
        EmulatorConfig,
        LatencyConfig,
        PoolConfig,
        parse_limits_text,
    )
    from testing.harness import LocalStack

    emulator = EmulatorConfig(
        pools=(
            PoolConfig(
                "default", parse_limits_text("requests=1000/s,tokens=10000000/s"), models=("*",)
            ),
        ),
        latency=LatencyConfig(ttft_ms=20),
    )
    doc = {
        "providers": {"emu": {"profile": "openai", "base_url": "emulator"}},
        "groups": {
            "emu:mini": {
                "provider": "emu",
                "models": ["gpt-4o-mini"],
                "requests": "50/s",
                "tokens": "1000000/s",
            }
        },
    }
    stack = LocalStack(emulator, doc).start()
    stacks.append(stack)
    stack.start_workers(2, pool="threads", concurrency=8)

    malformed = {
        17: "{not json at all",
        488: json.dumps({"body": {}}),
        950: request_line("x950", model="gpt-9"),
    }
    lines = [malformed.get(n, request_line(f"req-{n}")) for n in range(1, 1001)]
    source, output = tmp_path / "requests.jsonl", tmp_path / "results.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "tools.cli", "run", str(source), "-o", str(output)]

    def written() -> int:
        return output.read_text(encoding="utf-8").count("\n") if output.exists() else 0

    runner_log = tmp_path / "runner.log"
    with runner_log.open("wb") as log:
        first = subprocess.Popen(command, env=stack.env(), cwd=REPO_ROOT, stderr=log)

    def diagnosis() -> str:
        workers = "\n".join(stack.worker_log(i)[-4000:] for i in range(2))
        return f"runner:\n{runner_log.read_text()[-2000:]}\nworkers:\n{workers}"

    deadline = time.monotonic() + 60
    while written() < 300:
        assert first.poll() is None, diagnosis()
        assert time.monotonic() < deadline, f"only {written()} lines written\n{diagnosis()}"
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    at_kill = written()
    assert at_kill < 1000, "the first run finished before it was killed"

    second = subprocess.run(
        command, env=stack.env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert second.returncode == 0, second.stderr
    assert "ETA" in second.stderr and "/s" in second.stderr

    records = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 1000
    errors = {n: r for n, r in enumerate(records, start=1) if "error" in r}
    assert sorted(errors) == [17, 488, 950]
    assert all(errors[n]["error"]["line"] == n for n in errors)
    assert "UnknownGroupError" in errors[950]["error"]["message"]
    assert errors[950]["custom_id"] == "x950"
    expected_ids = [f"req-{n}" for n in range(1, 1001) if n not in malformed]
    assert [r["custom_id"] for r in records if "response" in r] == expected_ids
    assert all(r["response"]["body"] for r in records if "response" in r)
    assert stack.emulator_stats()["admitted"] == 997
