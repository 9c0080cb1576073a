"""``llm-throttle status``: pure interpretation of raw state, and one real-Redis run."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import redis

from throttle.config import GroupSettings, config_from_dict, load_config
from throttle.keys import KeyBuilder
from throttle.limiter import EPOCH_MS, RedisLimiter
from throttle.parking import ParkingLot
from throttle.queue_status import decayed_stats, wait_quantile_s
from throttle.scheduler import (
    STATS_HALF_LIFE_MS,
    WAIT_BOUNDS_MS,
    FairScheduler,
    QueuedItem,
    ReleasedItem,
)
from throttle.scripts import script_source
from throttle.status import (
    gcra_level_units,
    group_status,
    read_status,
    redact_url,
    status_document,
)
from throttle.status_read import RawGroupState, decode_fields, server_now_ms
from tools.cli import main
from tools.status_view import render_table

GROUP_DOC: dict[str, Any] = {
    "providers": {"openai": {"base_url": "http://provider"}},
    "groups": {
        "openai:mini": {
            "provider": "openai",
            "models": ["gpt-4o-mini"],
            "requests": "600/min",
            "tokens": "90k/min",
            "requests_day": {"limit": "10000/day", "timezone": "UTC"},
            "azure_requests": {"limit": "100/10s", "algorithm": "sliding", "counts": "requests"},
            "concurrency": 8,
            "headroom": 0.1,
            "cold_start": 0.5,
        }
    },
}


def settings() -> GroupSettings:
    return config_from_dict(GROUP_DOC).groups["openai:mini"]


def raw(fields: Mapping[str, str], now_ms: float = 10_000.0, **counts: int) -> RawGroupState:
    return RawGroupState(
        fields=fields,
        now_ms=now_ms,
        in_flight=counts.get("in_flight", 0),
        parked=counts.get("parked", 0),
        releasing=counts.get("releasing", 0),
    )


# -- pure functions --------------------------------------------------------------------


def test_server_now_counts_from_the_scripts_epoch() -> None:
    assert server_now_ms(EPOCH_MS // 1000 + 5, 250_000) == 5250.0


def test_decode_fields_accepts_bytes_and_text() -> None:
    assert decode_fields({b"m": b"0.6", "pause": "12"}) == {"m": "0.6", "pause": "12"}


def test_level_is_usable_capacity_minus_queue_ahead() -> None:
    # 10 units/s (emission 100 ms), headroom 0.1: usable 9; TAT 300 ms ahead: 3 used.
    assert gcra_level_units(10, 0.1, 1300.0, 1000.0, 100.0, 0.25) == pytest.approx(6.0)
    # TAT in the past: full.
    assert gcra_level_units(10, 0.1, 500.0, 1000.0, 100.0, 0.25) == pytest.approx(9.0)
    # In debt: the queue reaches further than the burst tolerance.
    assert gcra_level_units(10, 0.1, 2000.0, 1000.0, 100.0, 0.25) == pytest.approx(-1.0)
    # No state yet: as full as admit.lua's cold start assumes.
    assert gcra_level_units(10, 0.1, None, 1000.0, 100.0, 0.25) == pytest.approx(2.25)


def test_group_status_of_an_untouched_group() -> None:
    status = group_status(settings(), raw({}))
    assert not status.paused and status.paused_until_unix_ms is None
    assert status.multiplier == 1.0
    assert status.last_decrease_s_ago is None and status.decrease_epoch_left_s == 0
    requests, tokens, day, sliding = status.dimensions
    assert requests.effective_rate_per_s == pytest.approx(10.0)
    assert requests.level_units == pytest.approx(600 * 0.9 * 0.5)
    assert tokens.level_units == pytest.approx(90_000 * 0.9 * 0.5)
    assert day.algorithm == "calendar" and day.level_units is None
    assert sliding.level_units == pytest.approx(100.0), "headroom leaves a window whole"


def test_group_status_after_a_429_pause() -> None:
    now = 100_000.0
    fields = {
        "m": "0.6",
        "pause": str(now + 4_500),
        "d": str(now - 500),
        "q": str(now + 14_500),
        "k:tokens": "60000",
        "t:requests": str(int((now + 1_000) * 1000)),  # in µs: 1 s of queue at 6 req/s
        "s:azure_requests": "30",
    }
    status = group_status(settings(), raw(fields, now, in_flight=3, parked=7, releasing=1))
    assert status.paused and status.paused_for_s == pytest.approx(4.5)
    assert status.paused_until_unix_ms == pytest.approx(EPOCH_MS + now + 4_500)
    assert status.multiplier == 0.6
    assert status.last_decrease_s_ago == pytest.approx(0.5)
    assert status.decrease_epoch_left_s == pytest.approx(14.5)
    assert (status.in_flight, status.parked, status.releasing) == (3, 7, 1)
    requests, tokens, _day, sliding = status.dimensions
    assert requests.effective_capacity == pytest.approx(360)
    assert requests.effective_rate_per_s == pytest.approx(6.0)
    assert requests.level_units == pytest.approx(360 * 0.9 - 6)
    assert tokens.learned_capacity == 60_000
    assert tokens.effective_capacity == pytest.approx(36_000)
    # the multiplier holds a sliding window below its capacity too: 100 x 0.6 - 30
    assert sliding.effective_capacity == pytest.approx(60.0)
    assert sliding.level_units == pytest.approx(30.0)


def test_table_and_json_show_pause_multiplier_and_backlog() -> None:
    now = 100_000.0
    status = group_status(
        settings(), raw({"m": "0.6", "pause": str(now + 2_000), "d": str(now)}, now, parked=4)
    )
    table = render_table([status])
    assert "openai:mini" in table and "paused 2.0s" in table and "0.600" in table
    assert "requests_day" in table and "8" in table
    doc = json.loads(json.dumps(status_document([status], now)))
    assert doc["server_time_unix_ms"] == EPOCH_MS + now
    (group,) = doc["groups"]
    assert group["paused"] is True and group["parked"] == 4 and group["multiplier"] == 0.6
    assert [d["name"] for d in group["dimensions"]][:2] == ["requests", "tokens"]


def test_wait_quantiles_interpolate_within_a_bucket() -> None:
    counts = [0.0] * (len(WAIT_BOUNDS_MS) + 1)
    assert wait_quantile_s(counts, 0.5) is None
    counts[1] = 10.0  # ten waits in (10 ms, 25 ms]
    assert wait_quantile_s(counts, 0.5) == pytest.approx(0.0175)
    counts[-1] = 10.0 / 99 * 1.0001  # about 1% beyond the last bound
    assert wait_quantile_s(counts, 0.99) == WAIT_BOUNDS_MS[-1] / 1000


def test_statistics_halve_every_half_life() -> None:
    text = "1000,4," + ",".join(f"{k}:2" for k in range(1, len(WAIT_BOUNDS_MS) + 2))
    cost, counts = decayed_stats(text, 1000 + STATS_HALF_LIFE_MS)
    assert cost == pytest.approx(2.0)
    assert counts == pytest.approx([1.0] * (len(WAIT_BOUNDS_MS) + 1))
    assert decayed_stats(text, 500) == (4.0, [2.0] * (len(WAIT_BOUNDS_MS) + 1)), "never grows"


def test_the_statistics_constants_are_the_scripts() -> None:
    lua = script_source("schedule.lua")
    bounds = re.search(r"local WAIT_BOUNDS_MS = \{([^}]*)\}", lua)
    half_life = re.search(r"local HALF_LIFE_MS = (\d+)", lua)
    assert bounds and half_life
    assert tuple(int(x) for x in bounds.group(1).split(",")) == WAIT_BOUNDS_MS
    assert int(half_life.group(1)) == STATS_HALF_LIFE_MS


def test_redact_url_hides_the_password() -> None:
    assert redact_url("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert redact_url("redis://u:p@h/1") == "redis://u:***@h/1"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


# -- CLI errors ------------------------------------------------------------------------


def write_config(path: Path, redis_url: str, prefix: str) -> Path:
    path.write_text(
        f"""
[redis]
url = "{redis_url}"
prefix = "{prefix}"
socket_timeout_s = 2.0

[providers.openai]
base_url = "http://provider"

[groups."openai:mini"]
provider = "openai"
models = ["gpt-4o-mini"]
requests = "600/min"
tokens = "90k/min"
concurrency = 8
""",
        encoding="utf-8",
    )
    return path


def test_unreachable_redis_exits_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "t.toml", "redis://:pw@127.0.0.1:1/0", "x")
    assert main(["status", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "llm-throttle status" in err and "127.0.0.1:1" in err and "pw" not in err


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "config file not found" in capsys.readouterr().err


# -- real Redis ------------------------------------------------------------------------


@pytest.mark.integration
def test_status_shows_a_paused_group_its_backlog_and_multiplier(
    redis_url: str,
    redis_client: redis.Redis,
    key_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = write_config(tmp_path / "throttle.toml", redis_url, key_prefix)
    config = load_config(path, env={})
    group = config.limit_group(config.groups["openai:mini"])
    keys = KeyBuilder(key_prefix)
    limiter = RedisLimiter(redis_client, keys=keys)
    admission = limiter.admit(group, {"requests": 1, "tokens": 1000})
    assert admission.reserved and admission.lease
    pause = limiter.pause(group, 5, rate_limited=True)
    assert pause.decreased
    ParkingLot(redis_client, keys).park(
        group.name, "entry-1", pause.until_ms + 1000, {"task": "complete"}
    )

    _now, (status,) = read_status(redis_client, config)
    assert status.paused and 4.0 < status.paused_for_s <= 5.0
    assert status.parked == 1 and status.in_flight == 1
    assert status.multiplier == pytest.approx(pause.multiplier) and status.multiplier < 1
    assert status.last_decrease_s_ago is not None and status.last_decrease_s_ago < 5

    assert main(["status", "--config", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (group_doc,) = doc["groups"]
    assert group_doc["name"] == "openai:mini" and group_doc["paused"] is True
    assert group_doc["parked"] == 1 and group_doc["in_flight"] == 1
    assert group_doc["multiplier"] == pytest.approx(pause.multiplier)
    requests = group_doc["dimensions"][0]
    assert requests["effective_capacity"] == pytest.approx(600 * pause.multiplier)

    assert main(["status", "--config", str(path)]) == 0
    table = capsys.readouterr().out
    assert "openai:mini" in table and "paused" in table and f"{pause.multiplier:.3f}" in table


@pytest.mark.integration
def test_status_shows_the_fair_queue_per_lane_and_tenant(
    redis_url: str,
    redis_client: redis.Redis,
    key_prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A saturated group (600/min, tenant caps 2/min) with work of two tenants in two
    lanes: the status lists the queue, each lane and each flow's backlog, and which
    flow waits on its tenant cap."""
    path = write_config(tmp_path / "throttle.toml", redis_url, key_prefix)
    path.write_text(
        path.read_text(encoding="utf-8") + 'tenant = { requests = "2/min" }\n', encoding="utf-8"
    )
    config = load_config(path, env={})
    settings = config.groups["openai:mini"]
    scheduler = FairScheduler(
        RedisLimiter(redis_client, keys=KeyBuilder(key_prefix)), config.scheduler.lanes
    )
    for n, (tenant, lane) in enumerate([("acme", "interactive")] * 5 + [("etl", "batch")] * 3):
        group = config.limit_group(settings, tenant)
        costs = config.costs_for(settings, group, {"requests": 1, "tokens": 10})
        scheduler.push(group, QueuedItem(f"i{n}", costs, lane, tenant, 1.0, 0, "p"))

    _now, (status,) = read_status(redis_client, config)
    queue = status.scheduler
    assert queue is not None
    assert 4 <= queue.queued <= 8, "a cold tenant cap of 2/min lets at most one go at once"
    by_flow = {(f.lane, f.tenant): f for f in queue.flows}
    assert set(by_flow) == {("interactive", "acme"), ("batch", "etl")}
    assert sum(f.backlog for f in queue.flows) == queue.queued
    assert all(f.blocked_for_s > 0 for f in queue.flows), "both wait on their tenant caps"
    assert [lane.name for lane in queue.lanes] == ["interactive", "batch"]

    assert main(["status", "--config", str(path)]) == 0
    table = capsys.readouterr().out
    assert "fair queue:" in table and "acme" in table and "etl" in table
    assert main(["status", "--config", str(path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["groups"][0]["scheduler"]["queued"] == queue.queued


def test_status_shows_share_and_waits_per_lane_and_tenant(
    redis_url: str, redis_client: redis.Redis, key_prefix: str, tmp_path: Path
) -> None:
    """Released work is counted per tenant with its own plan and, for all others
    together, per lane ("*"): shares of the released cost, items, wait quantiles."""
    path = write_config(tmp_path / "throttle.toml", redis_url, key_prefix)
    config = load_config(path, env={})
    settings = config.groups["openai:mini"]
    limiter = RedisLimiter(redis_client, keys=KeyBuilder(key_prefix))
    scheduler = FairScheduler(limiter, config.scheduler.lanes)
    pushes = [("acme", "interactive", True)] * 6 + [("t1", "interactive", False)] * 2
    pushes += [("t2", "interactive", False)] * 2 + [("t3", "batch", False)] * 2
    group = config.limit_group(settings, None)
    released: list[ReleasedItem] = []
    for n, (tenant, lane, apart) in enumerate(pushes):
        costs = config.costs_for(settings, group, {"requests": 1, "tokens": 10})
        item = QueuedItem(f"i{n}", costs, lane, tenant, 1.0, 0, "p", stats_apart=apart)
        released.extend(scheduler.push(group, item).released)
    deadline = time.monotonic() + 30  # 600/min, 8 at once: all start within a second
    while scheduler.queued(group.name)[0] and time.monotonic() < deadline:
        for done in released:  # each finishes at once: its concurrency lease comes back
            assert done.reservation is not None
            limiter.settle(group, done.reservation, {})
        released = list(scheduler.run_pass(group).released)
    assert scheduler.queued(group.name) == (0, 0)

    _now, (status,) = read_status(redis_client, config)
    assert status.scheduler is not None
    used = {(t.lane, t.tenant): t.used for t in status.scheduler.tenants}
    assert set(used) == {("interactive", "acme"), ("interactive", "*"), ("batch", "*")}
    assert used["interactive", "acme"].released == pytest.approx(6, rel=0.01)
    assert used["interactive", "*"].released == pytest.approx(4, rel=0.01)
    assert used["interactive", "acme"].share == pytest.approx(0.5, abs=0.01), "equal costs"
    assert sum(u.share for u in used.values()) == pytest.approx(1.0, abs=0.01)
    waits = used["interactive", "acme"]
    assert waits.wait_p50_s is not None and waits.wait_p99_s is not None
    assert 0 <= waits.wait_p50_s <= waits.wait_p99_s <= 2.5, "all within about a second"
    lanes = {lane.name: lane.used for lane in status.scheduler.lanes}
    assert lanes["interactive"] is not None and lanes["batch"] is not None
    assert lanes["interactive"].released == pytest.approx(10, rel=0.01)
    table = render_table([status])
    assert "wait p99" in table and "acme" in table
