"""``llm-throttle demo``: the pure parts (plan, measurement, report and progress text)
without processes, then the real demo end to end (slow)."""

from __future__ import annotations

import io
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from throttle.config import config_from_dict
from tools.demo_plan import DEFAULT_PLAN, DemoRequest, per_minute
from tools.demo_progress import (
    Progress,
    ProgressDisplay,
    format_duration,
    recent_rate_per_s,
    render_progress,
)
from tools.demo_report import (
    Outcome,
    Sample,
    Window,
    build_report,
    busy_window,
    flower_command,
    format_banner,
    format_report,
    percentile,
    sample_of,
    steady_rate_per_s,
)

REPO = Path(__file__).resolve().parent.parent

# -- percentiles ------------------------------------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(list(map(float, range(1, 101))), 99) == pytest.approx(99.01)
    assert percentile([7.0], 99) == 7.0


def test_percentile_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], 101)


# -- the plan -----------------------------------------------------------------------------


def test_requests_follow_the_shares_and_are_reproducible() -> None:
    requests = DEFAULT_PLAN.requests(500)
    assert len(requests) == 500
    by_model = {m.model: sum(r.model == m.model for r in requests) for m in DEFAULT_PLAN.models}
    assert by_model == {"gpt-4o-mini": 300, "gpt-4o": 200}
    by_tenant = {t.name: sum(r.tenant == t.name for r in requests) for t in DEFAULT_PLAN.tenants}
    assert by_tenant == {"acme": 250, "globex": 150, "initech": 100}
    assert requests == DEFAULT_PLAN.requests(500)
    assert len({repr(r.messages) for r in requests}) > 50, "prompts should vary"
    choices = {m.model: set(m.max_tokens_choices) for m in DEFAULT_PLAN.models}
    assert all(r.max_tokens in choices[r.model] for r in requests)
    assert sum(1 for _ in DEFAULT_PLAN.requests(7)) == 7


def test_throttle_config_and_emulator_share_the_same_limits() -> None:
    doc = DEFAULT_PLAN.throttle_doc()
    doc["providers"]["emu"]["base_url"] = "http://127.0.0.1:9"
    config = config_from_dict(doc)
    emulator = DEFAULT_PLAN.emulator_config()
    pools = {pool.name: pool for pool in emulator.pools}
    for m in DEFAULT_PLAN.models:
        group = config.group_for("emu", m.model)
        assert group.tenant_dimensions, "tenants must matter"
        emulated = pools[m.pool].limits
        for dim in group.dimensions:
            assert dim.capacity / dim.period_s == pytest.approx(emulated[dim.name].rate_per_s)
    assert emulator.latency.ttft_ms > 0 and emulator.latency.tokens_per_s > 0


def test_per_minute() -> None:
    assert per_minute("12/s") == 720
    assert per_minute("3000/2s") == 90_000


# -- measurement --------------------------------------------------------------------------

KEY = ("gpt-4o-mini", "requests")


def ramp(rate_per_s: float, start_s: float, end_s: float, last_s: float) -> list[Sample]:
    """Samples every 0.5 s of a pool that admits ``rate_per_s`` from start to end."""
    samples: list[Sample] = []
    t = 0.0
    while t <= last_s + 1e-9:
        served_s = min(max(t - start_s, 0.0), end_s - start_s)
        samples.append((t, {KEY: rate_per_s * served_s}))
        t += 0.5
    return samples


def test_busy_window_spans_the_serving_stretch() -> None:
    samples = ramp(10.0, start_s=2.0, end_s=12.0, last_s=15.0)
    window = busy_window(samples, KEY)
    assert window is not None
    assert window.start_s == pytest.approx(2.0)
    assert window.end_s == pytest.approx(12.0)
    assert busy_window(samples, ("other", "requests")) is None
    assert busy_window([], KEY) is None


def test_steady_rate_ignores_the_opening_burst() -> None:
    samples = ramp(10.0, start_s=2.0, end_s=12.0, last_s=15.0)
    # a full bucket's burst of 30 at the start must not count as steady throughput
    samples = [(t, {KEY: c[KEY] + (30.0 if t >= 2.5 else 0.0)}) for t, c in samples]
    window = busy_window(samples, KEY)
    assert window is not None
    assert steady_rate_per_s(samples, KEY, window) == pytest.approx(10.0)
    assert steady_rate_per_s(samples, KEY, Window(2.0, 2.4)) is None


def test_sample_of_reads_emulator_stats() -> None:
    stats = {
        "now_s": 12.5,
        "pools": {"org-emulator/gpt-4o": {"tokens": {"admitted_cost": 900.0}}},
    }
    assert sample_of(stats) == (12.5, {("gpt-4o", "tokens"): 900.0})


def outcome(model: str, tenant: str, wait_s: float, parks: int = 0, ok: bool = True) -> Outcome:
    return Outcome(model, tenant, ok=ok, wait_s=wait_s, parks=parks, error=None if ok else "Boom")


def test_outcome_wait_runs_from_enqueue_to_the_call() -> None:
    request = DemoRequest("gpt-4o", "acme", ({"role": "user", "content": "hi"},), 64)
    result = {"throttle": {"started_ms": 1_000_003_500.0, "parks": 1, "rate_limited": 2}}
    done = Outcome.from_result(request, 1_000_000.0, result)
    assert done.wait_s == pytest.approx(3.5)
    assert (done.parks, done.rate_limited, done.ok) == (1, 2, True)
    legacy = Outcome.from_result(request, 0.0, {"throttle": {"waited_s": 0.25}})
    assert legacy.wait_s == 0.25


def report_for(samples: list[Sample], outcomes: list[Outcome], **stats: Any) -> str:
    report = build_report(
        DEFAULT_PLAN,
        outcomes,
        0,
        samples,
        {"by_status": {"200": len(outcomes)}, "early_retries": 0, **stats},
        wall_s=40.0,
        startup_s=4.0,
        workload_s=35.0,
    )
    return format_report(report)


def full_run_samples() -> list[Sample]:
    """mini admits 11.9 req/s and 2500 tok/s; gpt-4o 6 req/s and 2970 tok/s; 20 s."""
    samples: list[Sample] = []
    for i in range(45):
        t = i * 0.5
        s = min(max(t - 1.0, 0.0), 20.0)
        samples.append(
            (
                t,
                {
                    ("gpt-4o-mini", "requests"): 11.9 * s,
                    ("gpt-4o-mini", "tokens"): 2500.0 * s,
                    ("gpt-4o", "requests"): 6.0 * s,
                    ("gpt-4o", "tokens"): 2970.0 * s,
                },
            )
        )
    return samples


def test_report_shows_utilization_against_every_limit() -> None:
    outcomes = [outcome("gpt-4o-mini", "acme", w / 10, parks=w % 2) for w in range(100)]
    outcomes += [outcome("gpt-4o", "globex", 1.0) for _ in range(50)]
    text = report_for(full_run_samples(), outcomes)
    lines = text.splitlines()
    mini = next(line for line in lines if line.strip().startswith("emu:gpt-4o-mini  requests"))
    assert re.search(r"720/min\s+714/min\s+99\.2%\s+binding", mini), mini
    big_tokens = next(line for line in lines if "180,000/min" in line)
    assert "99.0%" in big_tokens and "binding" in big_tokens
    assert "wall time 40.0 s" in text
    assert "provider 429s: 0" in text
    groups = text.split("Groups:")[1]
    assert re.search(r"emu:gpt-4o-mini\s+100\s+0\s+50\s+0\s+4\.95 s\s+9\.80 s\s+20\.0 s", groups)
    acme = next(line for line in lines if line.strip().startswith("acme"))
    assert re.search(r"acme\s+100\s+100\s+0\s+0", acme), acme
    assert any(line.strip().startswith("initech") for line in lines)


def test_report_says_when_a_run_was_too_short_to_measure() -> None:
    text = report_for([(0.0, {}), (0.5, {KEY: 5.0})], [outcome("gpt-4o-mini", "acme", 0.1)])
    assert "n/a" in text and "too short" in text


def test_report_names_429s_and_failures() -> None:
    outcomes = [outcome("gpt-4o", "acme", 0.0, ok=False), outcome("gpt-4o", "acme", 1.0)]
    text = report_for(
        full_run_samples(),
        outcomes,
        by_status={"200": 1, "429": 3},
        refused={"rate_limit:tokens": 3},
    )
    assert "provider 429s: 3 (rate_limit:tokens 3)" in text
    assert "1 succeeded, 1 failed" in text
    assert "Boom" in text


def test_banner_and_flower_command() -> None:
    banner = format_banner(DEFAULT_PLAN, 500)
    assert "500 completions, 2 models, 3 tenants, 2 workers x 16 threads" in banner
    assert "requests 12/s (= 720/min)" in banner
    command = flower_command("/tmp/a b/throttle.toml", "redis://127.0.0.1:6379/1", "celery")
    assert command == (
        "LLM_THROTTLE_CONFIG='/tmp/a b/throttle.toml' celery -A workers.app"
        " --broker=redis://127.0.0.1:6379/1 flower --port=5555"
    )


# -- progress -----------------------------------------------------------------------------


def progress(**overrides: Any) -> Progress:
    values: dict[str, Any] = dict(
        done=250,
        total=500,
        enqueued=500,
        failed=0,
        elapsed_s=12.0,
        rate_per_s=20.0,
        provider_429s=0,
        parked=40,
    )
    values.update(overrides)
    return Progress(**values)


def test_progress_line_has_counts_rate_eta_and_429s() -> None:
    line = render_progress(progress(), width=120)
    assert line.startswith("[" + "#" * 20 + "." * 20 + "] 250/500  50%")
    assert "20.0/s" in line and "ETA 0:12" in line and "elapsed 0:12" in line
    assert "429s 0" in line and "parked 40" in line
    assert "enqueued" not in line and "failed" not in line
    sending = render_progress(progress(enqueued=300, failed=2, provider_429s=5), bar=False)
    assert sending.startswith("250/500  50%  enqueued 300")
    assert "429s 5" in sending and "failed 2" in sending


def test_progress_line_fits_a_narrow_terminal() -> None:
    assert len(render_progress(progress(), width=60)) <= 59
    assert render_progress(progress(done=500, rate_per_s=0.0), width=200).count("#") == 40


def test_eta() -> None:
    assert progress(rate_per_s=0.0).eta_s is None
    assert progress(done=500).eta_s == 0.0
    assert progress(rate_per_s=25.0).eta_s == pytest.approx(10.0)


def test_format_duration() -> None:
    assert format_duration(0.4) == "0:00"
    assert format_duration(42) == "0:42"
    assert format_duration(725) == "12:05"
    assert format_duration(3723) == "1:02:03"
    assert format_duration(None) == "--:--"
    assert format_duration(float("inf")) == "--:--"


def test_recent_rate_uses_the_last_seconds() -> None:
    assert recent_rate_per_s([]) == 0.0
    assert recent_rate_per_s([(0.0, 0)]) == 0.0
    history = [(float(t), 100 * t if t < 10 else 1000 + 10 * (t - 10)) for t in range(21)]
    assert recent_rate_per_s(history, window_s=5.0) == pytest.approx(10.0)


def test_display_without_a_terminal_prints_periodic_lines() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, every_s=5.0)
    for t in range(12):
        display.show(progress(elapsed_s=float(t)))
    display.show(progress(done=500, elapsed_s=12.5), final=True)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # at 0, 5 and 10 s, and the final one
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines[-1].startswith("500/500 100%")


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_display_on_a_terminal_redraws_one_line() -> None:
    out = FakeTerminal()
    display = ProgressDisplay(out)
    display.show(progress())
    display.show(progress(done=500), final=True)
    text = out.getvalue()
    assert text.count("\r\x1b[2K") == 2 and text.endswith("\n") and text.count("\n") == 1


# -- the command line ------------------------------------------------------------------


def test_cli_stays_importable_without_celery() -> None:
    code = (
        "import sys, tools.cli\n"
        "assert 'celery' not in sys.modules and 'tools.demo' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


def test_demo_rejects_a_bad_task_count(capsys: pytest.CaptureFixture[str]) -> None:
    from tools.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--tasks", "0"])
    assert exit_info.value.code == 2
    assert "at least 1" in capsys.readouterr().err


# -- the real demo -------------------------------------------------------------------------


def processes_with_env(name: str, value: str) -> list[int]:
    """Pids of live processes whose environment has ``name=value``."""
    needle = f"{name}={value}".encode() + b"\0"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stack_ports(text: str) -> list[int]:
    """The emulator's and redis-server's ports, from the demo's output."""
    emulator = re.search(r"emulator at http://127\.0\.0\.1:(\d+)", text)
    broker = re.search(r"--broker=redis://127\.0\.0\.1:(\d+)/", text)
    assert emulator is not None and broker is not None, text
    return [int(emulator.group(1)), int(broker.group(1))]


def demo_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "tools.cli", "demo", *args]


def demo_env() -> Mapping[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}


@pytest.mark.integration
@pytest.mark.slow
def test_the_demo_runs_and_reports() -> None:
    started = time.monotonic()
    done = subprocess.run(
        demo_command("--tasks", "60"),
        cwd=REPO,
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )
    elapsed_s = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    text = done.stdout
    assert "tasks: 60 enqueued, 60 succeeded, 0 failed, 0 unfinished" in text
    assert re.search(r"provider 429s: \d+", text)
    for expected in ("emu:gpt-4o-mini", "emu:gpt-4o", "acme", "globex", "initech"):
        assert expected in text
    assert "60/60 100%" in text, "the final progress line"
    assert "celery -A workers.app --broker=redis://" in text and " flower" in text
    config = re.search(r"LLM_THROTTLE_CONFIG=(\S+)", text)
    assert config is not None
    assert not processes_with_env("LLM_THROTTLE_CONFIG", config.group(1)), "workers left"
    assert not any(listening(port) for port in stack_ports(text)), "emulator or redis left"
    assert not Path(config.group(1)).exists(), "the work directory should be gone"
    assert elapsed_s < 60


def demo_with_stack_up() -> tuple[subprocess.Popen[str], str, list[int]]:
    """A demo started with 400 tasks, once its stack is up: the process, its config
    path and its stack's ports."""
    demo = subprocess.Popen(
        demo_command("--tasks", "400", "--keep"),
        cwd=REPO,
        env=demo_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert demo.stdout is not None
    config, seen = None, ""
    deadline = time.monotonic() + 60
    while config is None and time.monotonic() < deadline:
        line = demo.stdout.readline()
        if not line:
            demo.kill()
            raise AssertionError("the demo ended before the stack was up")
        seen += line
        found = re.search(r"LLM_THROTTLE_CONFIG=(\S+)", line)
        config = found.group(1) if found else None
    if config is None:
        demo.kill()
        raise AssertionError("the demo's stack did not come up in 60 s")
    return demo, config, stack_ports(seen)


@pytest.mark.integration
@pytest.mark.slow
def test_ctrl_c_stops_every_process_the_demo_started() -> None:
    demo, config, ports = demo_with_stack_up()
    try:
        assert all(listening(port) for port in ports)
        assert len(processes_with_env("LLM_THROTTLE_CONFIG", config)) >= 2, "workers running"
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=10)  # the target is 5 s (bench/demo_stop.py)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 130, rest
    assert "interrupted (SIGINT)" in rest
    assert not processes_with_env("LLM_THROTTLE_CONFIG", config), "workers left"
    assert not any(listening(port) for port in ports), "emulator or redis left"


@pytest.mark.integration
@pytest.mark.slow
def test_a_sigkilled_demo_leaves_no_process_behind() -> None:
    """Its children die with it (a parent-death signal): no worker, emulator or
    redis-server is left running, though the demo could not stop them itself."""
    demo, config, ports = demo_with_stack_up()
    try:
        assert len(processes_with_env("LLM_THROTTLE_CONFIG", config)) >= 2, "workers running"
        demo.kill()
        demo.wait()
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    deadline = time.monotonic() + 30  # workers finish the call in hand (warm shutdown)
    while processes_with_env("LLM_THROTTLE_CONFIG", config) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not processes_with_env("LLM_THROTTLE_CONFIG", config), "workers left"
    assert not any(listening(port) for port in ports), "emulator or redis left"
