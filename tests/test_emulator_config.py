"""Emulator configuration: files, flags, and errors that name the bad key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testing.emulator import (
    EmulatorConfig,
    FaultKind,
    LimitConfig,
    MeterKind,
    OutputMode,
    Profile,
    load_config,
)
from testing.emulator.cli import emulator_config_from_args
from throttle.errors import ConfigError
from tools.cli import main

TOML = """
profile = "anthropic"
clock = "manual"
output_mode = "reserve"
default_max_tokens = 2048
count_rejected = false

[latency]
ttft_ms = 250
tokens_per_s = 80
output_fraction = [0.5, 0.9]

[keys]
"sk-a" = "org-a"

[[pools]]
name = "sonnet"
models = ["claude-sonnet-*"]
[pools.limits]
requests = "50/min"
input_tokens = "30k/min"
output_tokens = { capacity = 8000, window_s = 60 }

[[pools]]
name = "azure-ish"
meter = "sliding"
limits = { requests = "100/2s", tokens_day = "1.5M/day" }

[[faults]]
kind = "rate_limit"
start_s = 2
duration_s = 5
retry_after_s = 3
api_key = "sk-a"

[[faults]]
kind = "limit_change"
start_s = 10
pool = "sonnet"
limits = { requests = "5/min" }
"""


def test_toml_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "emu.toml"
    path.write_text(TOML)
    config = load_config(path)
    assert config.profile is Profile.ANTHROPIC
    assert config.output_mode is OutputMode.RESERVE
    assert config.count_rejected is False and not config.effective_count_rejected
    assert config.latency.ttft_ms == 250 and config.latency.output_fraction_max == 0.9
    sonnet, other = config.pools
    assert sonnet.models == ("claude-sonnet-*",)
    assert sonnet.limits["input_tokens"] == LimitConfig(30_000, 60.0)
    assert sonnet.limits["output_tokens"] == LimitConfig(8000, 60.0)
    assert other.limits["requests"] == LimitConfig(100, 2.0)
    assert other.limits["tokens_day"] == LimitConfig(1_500_000, 86_400.0)
    assert config.pool_meter(other) is MeterKind.SLIDING
    assert config.faults[0].kind is FaultKind.RATE_LIMIT
    assert config.faults[0].active_at(6.9) and not config.faults[0].active_at(7.0)
    json_path = tmp_path / "emu.json"
    json_path.write_text(json.dumps(config.to_mapping()))
    assert load_config(json_path) == config


def test_default_config_has_one_pool_per_profile_defaults() -> None:
    config = EmulatorConfig(profile=Profile.ANTHROPIC)
    assert set(config.pools[0].limits) == {"requests", "input_tokens", "output_tokens"}
    assert EmulatorConfig().effective_count_rejected


@pytest.mark.parametrize(
    ("data", "names"),
    [
        ({"profile": "cohere"}, "profile"),
        ({"colour": 1}, "'colour'"),
        ({"pools": [{"name": "p", "limits": {"tokens": "lots"}}]}, "pools[0].limits.tokens"),
        ({"pools": [{"name": "p", "limits": {"bananas": "1/s"}}]}, "pools[0].limits.bananas"),
        ({"pools": [{"name": "p", "limits": {}}]}, "pools[0].limits"),
        ({"pools": [{"limits": {"tokens": "1/s"}}]}, "pools[0].name"),
        ({"faults": [{"kind": "gremlins"}]}, "faults[0].kind"),
        ({"faults": [{"kind": "slow", "probability": 2}]}, "faults[0].probability"),
        ({"faults": [{"kind": "limit_change"}]}, "faults[0].limits"),
        ({"latency": {"ttft_ms": "fast"}}, "latency.ttft_ms"),
        ({"default_max_tokens": 0}, "default_max_tokens"),
        ({"faults": [{"kind": "slow", "pool": "nope"}]}, "faults[0].pool"),
    ],
)
def test_bad_config_names_the_key(data: dict[str, object], names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace("[", r"\[").replace("]", r"\]")):
        EmulatorConfig.from_mapping(data)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"emu\.toml"):
        load_config(tmp_path / "emu.toml")


def _parse(argv: list[str]) -> EmulatorConfig:
    import argparse

    from tools import cli

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    cli._add_emulator(sub)
    config = emulator_config_from_args(parser.parse_args(["emulator", *argv]))
    assert isinstance(config, EmulatorConfig)
    return config


def test_cli_flags_build_the_config(tmp_path: Path) -> None:
    config = _parse(
        [
            "--profile", "azure", "--limits", "requests=60/s,tokens=20000/s",
            "--models", "gpt-4o,gpt-4o-mini", "--ttft-ms", "0", "--tokens-per-s", "0",
            "--no-count-rejected", "--manual-clock", "--key", "sk-a=org-a",
            "--fault", "kind=rate_limit,start_s=2,duration_s=5,retry_after_s=3",
            "--fault", '{"kind": "slow", "delay_ms": 100}',
        ]
    )  # fmt: skip
    assert config.profile is Profile.AZURE
    assert config.pools[0].limits["tokens"] == LimitConfig(20_000, 1.0)
    assert config.pools[0].models == ("gpt-4o", "gpt-4o-mini")
    assert config.count_rejected is False
    assert config.keys == {"sk-a": "org-a"}
    assert [f.kind for f in config.faults] == [FaultKind.RATE_LIMIT, FaultKind.SLOW]
    assert config.faults[0].retry_after_s == 3


def test_cli_flags_override_the_file(tmp_path: Path) -> None:
    path = tmp_path / "emu.toml"
    path.write_text(TOML)
    config = _parse(["--config", str(path), "--profile", "openai", "--ttft-ms", "5"])
    assert config.profile is Profile.OPENAI
    assert config.latency.ttft_ms == 5 and config.latency.tokens_per_s == 80
    assert len(config.pools) == 2


def test_cli_reports_config_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["emulator", "--limits", "tokens=lots"]) == 2
    assert "pools[0].limits.tokens: invalid limit 'lots'" in capsys.readouterr().err
