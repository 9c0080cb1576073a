"""Configuration: TOML, environment overrides, and errors that name the bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from throttle.config import (
    LIMIT_GROUP_CACHE_SIZE,
    config_from_dict,
    load_config,
    tenant_dimension,
)
from throttle.errors import ConfigError, UnknownGroupError
from throttle.limits import Algorithm, Dimension

GOOD = """
[redis]
url = "redis://10.0.0.5:6379/0"

[worker]
hold_horizon_s = 3

[providers.openai]
base_url = "https://api.openai.com"
credential = "openai-prod"

[groups."openai:mini"]
provider = "openai"
models = ["gpt-4o-mini", "gpt-4.1-mini"]
requests = "5000/min"
tokens = "2M/min"
requests_day = { limit = "10000/day", timezone = "America/Los_Angeles" }
concurrency = 50
tenant = { requests = "500/min" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "throttle.toml"
    path.write_text(text)
    return path


def test_a_full_file_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), env={})
    group = config.group_for("openai", "gpt-4.1-mini")
    assert group.name == "openai:mini"
    assert config.worker.hold_horizon_s == 3.0
    dims = {d.name: d for d in group.dimensions}
    assert dims["tokens"].capacity == 2_000_000
    assert dims["requests_day"].algorithm is Algorithm.CALENDAR
    assert group.counts["requests_day"] == "requests"
    assert config.broker_url == "redis://10.0.0.5:6379/0"


def test_tenant_shares_join_the_group_in_one_admission(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD), env={})
    settings = config.group_for("openai", "gpt-4o-mini")
    acme = config.limit_group(settings, "acme")
    names = [d.name for d in acme.dimensions]
    assert tenant_dimension("acme", "requests") in names
    assert config.limit_group(settings, "acme") is acme, "built once per tenant"
    costs = config.costs_for(settings, acme, {"requests": 1, "tokens": 300})
    assert costs[tenant_dimension("acme", "requests")] == 1
    assert costs["requests_day"] == 1
    assert costs["tokens"] == 300


def test_environment_overrides(tmp_path: Path) -> None:
    env = {
        "LLM_THROTTLE_REDIS_URL": "redis://override:1/0",
        "LLM_THROTTLE__worker__throttle_deadline_s": "120",
        "LLM_THROTTLE__groups__openai:mini__concurrency": "7",
    }
    config = load_config(write(tmp_path, GOOD), env=env)
    assert config.redis.url == "redis://override:1/0"
    assert config.worker.throttle_deadline_s == 120.0
    assert config.groups["openai:mini"].concurrency == 7


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    assert "openai:mini" in load_config(env={"LLM_THROTTLE_CONFIG": str(path)}).groups


def base() -> dict[str, Any]:
    return {
        "providers": {"openai": {"base_url": "https://api.openai.com"}},
        "groups": {"g": {"provider": "openai", "models": ["m"], "requests": "10/s"}},
    }


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (lambda d: d["groups"]["g"].update(tokens="90q/min"), "groups.g.tokens"),
        (lambda d: d["groups"]["g"].update(provider="nope"), "groups.g.provider"),
        (lambda d: d["groups"]["g"].update(models=[]), "groups.g.models"),
        (lambda d: d["groups"]["g"].update(concurrency=0), "groups.g.concurrency"),
        (lambda d: d["groups"]["g"].update(widgets="5/s"), "groups.g.widgets"),
        (lambda d: d["groups"]["g"].update(failure_policy="maybe"), "groups.g.failure_policy"),
        (lambda d: d["providers"]["openai"].update(profile="skynet"), "providers.openai.profile"),
        (lambda d: d["providers"]["openai"].pop("base_url"), "providers.openai.base_url"),
        (lambda d: d["providers"]["openai"].update(read_timeout_s=-1), "read_timeout_s"),
        (lambda d: d["providers"]["openai"].update(accounting="settle"), "accounting: expected"),
        (
            lambda d: d["providers"]["openai"].update(accounting={"output": "later"}),
            "providers.openai.accounting.output: expected one of",
        ),
        (
            lambda d: d["providers"]["openai"].update(accounting={"input": "settle"}),
            "providers.openai.accounting: unknown key",
        ),
        (
            lambda d: d["providers"]["openai"].update(
                profile="gemini", accounting={"output": "settle"}
            ),
            "does not limit output",
        ),
        (lambda d: d.update(worker={"hold_horizon_s": "soon"}), "worker.hold_horizon_s"),
        (lambda d: d.update(worker={"holdhorizon": 1}), "holdhorizon"),
        (lambda d: d.update(worker={"release_stale_s": 0.01}), "release_stale_s must exceed"),
        (lambda d: d.update(redis={"failure_policy": "sideways"}), "redis.failure_policy"),
        (lambda d: d.update(extra={}), "extra"),
        (lambda d: d["groups"]["g"].update(aimd={"decrease": 2}), "groups.g.aimd"),
        (lambda d: d["groups"]["g"].update(aimd={"speed": 2}), "groups.g.aimd"),
        (lambda d: d["groups"]["g"].update(cold_start=0), "cold_start"),
        (lambda d: d["groups"]["g"].update(wire_margin_s=-1), "groups.g.wire_margin_s"),
        (lambda d: d["groups"]["g"].update(wire_margin_s="1s"), "groups.g.wire_margin_s"),
        (lambda d: d["groups"]["g"].update(widgets="auto"), "groups.g.widgets"),
        (lambda d: d["groups"]["g"].update(requests="auto/fortnight"), "groups.g.requests"),
        (
            lambda d: d["groups"]["g"].update(requests={"limit": "auto", "algorithm": "sliding"}),
            "groups.g.requests: auto limits use the gcra algorithm",
        ),
        (
            lambda d: d["groups"]["g"].update(tenant={"requests": "auto"}),
            "groups.g.tenant.requests: a tenant's share needs a number",
        ),
        (
            lambda d: d["groups"]["g"].update(requests={"limit": "5/s", "start": "1/s"}),
            "groups.g.requests: 'start' is for auto limits only",
        ),
    ],
)
def test_bad_config_names_the_key(change: Any, named: str) -> None:
    doc = base()
    change(doc)
    with pytest.raises(ConfigError) as info:
        config_from_dict(doc)
    assert named in str(info.value)


def test_auto_limits_start_low_or_where_told() -> None:
    doc = base()
    doc["groups"]["g"].update(
        requests="auto", tokens="auto/day", output_tokens={"limit": "auto", "start": "1k/min"}
    )
    dims = {d.name: d for d in config_from_dict(doc).groups["g"].dimensions}
    assert all(d.auto for d in dims.values())
    assert (dims["requests"].capacity, dims["requests"].period_s) == (60, 60)
    assert (dims["tokens"].capacity, dims["tokens"].period_s) == (20_000 * 1440, 86_400)
    assert (dims["output_tokens"].capacity, dims["output_tokens"].period_s) == (1000, 60)


def test_the_limit_group_carries_every_group_setting() -> None:
    doc = base()
    doc["groups"]["g"].update(
        concurrency=7,
        lease_ttl_s=30,
        headroom=0.1,
        cold_start=0.5,
        aimd={"decrease": 0.5, "increase": 0.1, "floor": 0.2},
        wire_margin_s=0.03,
    )
    config = config_from_dict(doc)
    limit_group = config.limit_group(config.groups["g"])
    assert limit_group.wire_margin_s == 0.03
    assert limit_group.concurrency == 7
    assert limit_group.lease_ttl_s == 30
    assert limit_group.headroom == 0.1
    assert limit_group.cold_start == 0.5
    assert (limit_group.aimd.decrease, limit_group.aimd.increase) == (0.5, 0.1)
    assert limit_group.aimd.floor == 0.2


def test_a_model_in_two_groups_is_refused() -> None:
    doc = base()
    doc["groups"]["h"] = {"provider": "openai", "models": ["m"], "requests": "1/s"}
    with pytest.raises(ConfigError, match="already in 'g'"):
        config_from_dict(doc)


def test_unknown_provider_and_model_are_typed() -> None:
    config = config_from_dict(base())
    with pytest.raises(UnknownGroupError, match="azure"):
        config.group_for("azure", "m")
    with pytest.raises(UnknownGroupError, match="gpt-9"):
        config.group_for("openai", "gpt-9")


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"throttle\.toml"):
        load_config(write(tmp_path, "[groups\n"), env={})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml", env={})


def test_tenant_names_are_kept_exactly_in_their_buckets() -> None:
    """Distinct tenants never share a bucket, whatever their names hold; every name
    gives a valid dimension name, and long ones stay bounded."""
    names = [
        "acme.com",
        "acme_com",
        "acme-com",
        "acme com",
        "ACME.com",
        "",
        "é",
        "_c3_a9",
        "x" * 200,
        "x" * 199 + "y",
        "{tag}|lane:1",
    ]
    dims = [tenant_dimension(name, "requests") for name in names]
    assert len(set(dims)) == len(names)
    for dim in dims:
        Dimension(dim, 1, 60)  # a valid dimension name
        assert len(dim) <= len("tenant..requests") + 64
        assert dim.rsplit(".", 1)[-1] == "requests"
    assert tenant_dimension("acme", "requests") == "tenant.acme.requests"


def test_idle_tenants_do_not_stay_in_memory(tmp_path: Path) -> None:
    """Each tenant's limit group is built once while it is active, and the cache stays
    bounded however many tenants pass: the oldest are dropped and rebuilt on return."""
    config = load_config(write(tmp_path, GOOD), env={})
    settings = config.group_for("openai", "gpt-4o-mini")
    first = config.limit_group(settings, "tenant-0")
    for n in range(1, 3 * LIMIT_GROUP_CACHE_SIZE):
        config.limit_group(settings, f"tenant-{n}")
    assert len(config._limit_groups) <= LIMIT_GROUP_CACHE_SIZE
    again = config.limit_group(settings, "tenant-0")
    assert again is not first and again == first


def test_tenant_plans_and_lanes(tmp_path: Path) -> None:
    text = GOOD.replace(
        'tenant = { requests = "500/min" }',
        'tenant = { requests = "500/min", tokens = "100k/min", weight = 2 }\n'
        'tenants.acme = { weight = 3, requests = "1000/min" }',
    )
    text += '\n[scheduler]\nlanes = ["now", "soon", "later"]\n'
    text += "min_share = { soon = 0.2, later = 0.05 }\n"
    config = load_config(write(tmp_path, text), env={})
    settings = config.group_for("openai", "gpt-4o-mini")
    assert config.tenant_weight(settings, "acme") == 3.0
    assert config.tenant_weight(settings, "other") == 2.0
    caps = {d.name: d.capacity for d in config.limit_group(settings, "acme").dimensions}
    assert caps[tenant_dimension("acme", "requests")] == 1000, "the named plan's own cap"
    assert caps[tenant_dimension("acme", "tokens")] == 100_000, "the default's other caps"
    lanes = config.scheduler.lanes
    assert [(lane.name, lane.min_share) for lane in lanes] == [
        ("now", 0.0),
        ("soon", 0.2),
        ("later", 0.05),
    ]
    assert lanes[1].credit_rate == pytest.approx(0.25)
    assert config.scheduler.lane(None) == "now"
    with pytest.raises(ConfigError, match="unknown lane 'batch'"):
        config.scheduler.lane("batch")


@pytest.mark.parametrize(
    ("scheduler", "message"),
    [
        ({"lanes": []}, "scheduler.lanes: expected a non-empty list"),
        ({"lanes": ["a", "a"]}, "names must be distinct"),
        ({"lanes": ["a|b"]}, "names must be distinct"),
        ({"lanes": ["a", "b"], "min_share": {"a": 0.1}}, "the highest lane needs no share"),
        ({"lanes": ["a", "b"], "min_share": {"b": 1.0}}, r"min_share.b: expected a number"),
        ({"lanes": ["a", "b"], "min_share": {"c": 0.1}}, "no such lane"),
        ({"lanes": ["a", "b"], "default_lane": "c"}, "default_lane"),
        ({"lane": ["a"]}, "unknown key"),
    ],
)
def test_bad_scheduler_sections_are_named(scheduler: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"scheduler": scheduler})


def test_a_bad_tenant_weight_is_named() -> None:
    raw = {
        "providers": {"openai": {"base_url": "https://api.openai.com"}},
        "groups": {
            "g": {
                "provider": "openai",
                "models": ["m"],
                "requests": "10/min",
                "tenants": {"acme": {"weight": 0}},
            }
        },
    }
    with pytest.raises(ConfigError, match=r"groups\.g\.tenants\.acme\.weight: expected a positive"):
        config_from_dict(raw)


def test_output_accounting_is_chosen_per_provider() -> None:
    doc = base()
    doc["providers"]["claude"] = {"profile": "anthropic", "base_url": "http://a"}
    doc["providers"]["fast"] = {
        "profile": "anthropic",
        "base_url": "http://b",
        "accounting": {"output": "realtime"},
    }
    config = config_from_dict(doc)
    default = config.providers["claude"].resolved_profile()
    realtime = config.providers["fast"].resolved_profile()
    assert default.reserve(input_tokens=10, max_tokens=500).costs["output_tokens"] == 500
    assert realtime.reserve(input_tokens=10, max_tokens=500).costs["output_tokens"] == 0
    assert config.providers["openai"].resolved_profile().accounting.output == "reserve"  # type: ignore[union-attr]


def test_request_shape_settings_reach_the_request() -> None:
    """max_tokens_field (reasoning models), Azure's deployments and api-version, and
    Anthropic's version, from TOML to the request a worker sends."""
    doc = base()
    doc["providers"]["o-series"] = {
        "profile": "openai",
        "base_url": "http://o",
        "max_tokens_field": "max_completion_tokens",
    }
    doc["providers"]["az"] = {
        "profile": "azure",
        "base_url": "https://res.openai.azure.com",
        "api_version": "2025-04-01-preview",
        "deployments": {"gpt-4o": "prod-4o"},
    }
    doc["providers"]["claude"] = {
        "profile": "anthropic",
        "base_url": "http://a",
        "api_version": "2024-01-01",
    }
    providers = config_from_dict(doc).providers
    ask = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 9, "params": {}}
    reasoning = providers["o-series"].resolved_profile()
    body = reasoning.build_request(base_url="http://o", model="o3", api_key=None, **ask).json
    assert body["max_completion_tokens"] == 9 and "max_tokens" not in body
    azure = (
        providers["az"]
        .resolved_profile()
        .build_request(base_url="https://res.openai.azure.com", model="gpt-4o", api_key=None, **ask)
    )
    assert azure.url == (
        "https://res.openai.azure.com/openai/deployments/prod-4o/chat/completions"
        "?api-version=2025-04-01-preview"
    )
    claude = (
        providers["claude"]
        .resolved_profile()
        .build_request(base_url="http://a", model="claude-sonnet", api_key=None, **ask)
    )
    assert dict(claude.headers)["anthropic-version"] == "2024-01-01"


@pytest.mark.parametrize(
    ("provider", "named"),
    [
        ({"profile": "anthropic", "max_tokens_field": "max_completion_tokens"}, "max_tokens_field"),
        ({"profile": "openai", "max_tokens_field": "tokens"}, "max_tokens_field: one of"),
        ({"profile": "openai", "deployments": {"a": "b"}}, "deployments: the 'openai' profile"),
        ({"profile": "azure", "deployments": {"a": 3}}, "deployments"),
        ({"profile": "azure", "api_version": 2024}, "api_version"),
    ],
)
def test_a_request_shape_setting_a_profile_cannot_take_is_named(
    provider: dict[str, Any], named: str
) -> None:
    doc = base()
    doc["providers"]["x"] = {"base_url": "http://x", **provider}
    with pytest.raises(ConfigError) as info:
        config_from_dict(doc)
    assert "providers.x" in str(info.value) and named in str(info.value)


def test_the_readme_configuration_loads() -> None:
    """The annotated configuration in the README is a valid file."""
    import tomllib

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    config = config_from_dict(tomllib.loads(block))
    assert (
        config.providers["azure"]
        .resolved_profile()
        .build_request(
            base_url="https://my-resource.openai.azure.com",
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=5,
            params={},
            api_key=None,
        )
        .url.startswith("https://my-resource.openai.azure.com/openai/deployments/prod-gpt4o/")
    )


def test_a_group_with_credentials_has_a_limit_group_for_each() -> None:
    doc = base()
    doc["groups"]["g"]["credentials"] = ["key-a", "key-b"]
    config = config_from_dict(doc)
    settings = config.groups["g"]
    assert config.limit_group_names() == ("g@key-a", "g@key-b")
    assert config.limit_group(settings, None, "key-b").name == "g@key-b"
    assert config.limit_group_named("g@key-a") == (settings, "key-a")
    assert config.limit_group_named("g@key-c") is None
    assert config.limit_group_named("g") is None, "the group's own name holds no buckets"
    with pytest.raises(ConfigError, match="credentials"):
        config.limit_group(settings, None, None)


@pytest.mark.parametrize(
    ("credentials", "named"),
    [([], "non-empty list"), (["a", "a"], "each once"), (["a b"], "letters"), ("a", "list")],
)
def test_bad_credentials_are_named(credentials: Any, named: str) -> None:
    doc = base()
    doc["groups"]["g"]["credentials"] = credentials
    with pytest.raises(ConfigError, match=named):
        config_from_dict(doc)


def test_a_group_name_may_not_hold_an_at_sign() -> None:
    doc = base()
    doc["groups"]["a@b"] = doc["groups"].pop("g")
    with pytest.raises(ConfigError, match="'@'"):
        config_from_dict(doc)


def test_parsing_leaves_the_callers_document_as_it_was() -> None:
    raw = {"scheduler": {"lanes": ["now", "later"], "min_share": {"later": 0.1}}}
    config_from_dict(raw)
    assert raw == {"scheduler": {"lanes": ["now", "later"], "min_share": {"later": 0.1}}}
