"""docker-compose.yml, checked without a Docker engine: services, commands and variables
against the project's real entry points, and the configuration the workers mount."""

from __future__ import annotations

import importlib.util
import re
import shlex
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gateway.settings import gateway_settings
from gateway.translate import ModelIndex
from testing.emulator.cli import emulator_config_from_args
from throttle.config import load_config
from tools.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"

#: ``${NAME}``, ``${NAME:-default}``, ``${NAME-default}``, ``${NAME:?error}``, ``${NAME?error}``;
#: ``$$`` is a literal dollar.
_VARIABLE = re.compile(r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    """Compose's variable substitution (the subset this file uses)."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group("name"), match.group("op"), match.group("arg")
        value = env.get(name)
        missing = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-"):
            return arg if missing else str(value)
        if missing:
            raise KeyError(f"{name} is required: {arg}")
        return str(value)

    return _VARIABLE.sub(one, text)


def variables(text: str) -> set[str]:
    return {m.group("name") for m in _VARIABLE.finditer(text) if m.group("name")}


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not NAME=value"
            values[name.strip()] = value.strip()
    return values


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as Compose sees it with the values of .env.example."""
    loaded = yaml.safe_load(interpolate(COMPOSE.read_text(encoding="utf-8"), env_example()))
    assert isinstance(loaded, dict)
    return loaded


def service(compose: Mapping[str, Any], name: str) -> dict[str, Any]:
    spec = compose["services"][name]
    assert isinstance(spec, dict)
    return spec


def command(spec: Mapping[str, Any]) -> list[str]:
    raw = spec["command"]
    return [str(part) for part in raw] if isinstance(raw, list) else shlex.split(raw)


def celery_parts(argv: list[str]) -> tuple[str, str]:
    """(``-A`` app module, celery subcommand) of a ``celery -A <app> <sub> ...`` command."""
    assert argv[0] == "celery", argv
    rest = argv[1:]
    app = None
    while rest and rest[0].startswith("-"):
        option = rest.pop(0)
        if option in ("-A", "--app"):
            app = rest.pop(0)
        elif option.startswith("--app="):
            app = option.split("=", 1)[1]
    assert app is not None and rest, argv
    return app, rest[0]


def test_the_stack_has_its_services(compose: dict[str, Any]) -> None:
    assert {"redis", "worker", "flower", "emulator", "gateway"} <= set(compose["services"])


def test_every_variable_is_documented_in_env_example() -> None:
    used = variables(COMPOSE.read_text(encoding="utf-8"))
    documented = set(env_example())
    assert used, "the compose file takes its secrets from the environment"
    assert used <= documented, f"undocumented: {sorted(used - documented)}"
    assert documented <= used, f"documented but unused: {sorted(documented - used)}"


def test_required_variables_fail_loudly_when_missing() -> None:
    env = env_example()
    del env["REDIS_PASSWORD"]
    with pytest.raises(KeyError, match="REDIS_PASSWORD"):
        interpolate(COMPOSE.read_text(encoding="utf-8"), env)


def test_workers_scale(compose: dict[str, Any]) -> None:
    worker = service(compose, "worker")
    assert "container_name" not in worker and "ports" not in worker
    argv = command(worker)
    app, subcommand = celery_parts(argv)
    assert subcommand == "worker"
    assert importlib.util.find_spec(app) is not None, f"-A {app}: no such module"
    assert argv[argv.index("-P") + 1] == "threads" and argv[argv.index("-c") + 1] == "16"
    assert "-E" in argv  # task events, for Flower


def test_redis_has_a_password_and_append_only_file_on_a_volume(compose: dict[str, Any]) -> None:
    redis_service = service(compose, "redis")
    argv = command(redis_service)
    assert argv[0] == "redis-server"
    assert argv[argv.index("--requirepass") + 1] == env_example()["REDIS_PASSWORD"]
    assert argv[argv.index("--appendonly") + 1] == "yes"
    volume, _, target = redis_service["volumes"][0].partition(":")
    assert target == "/data" and volume in compose["volumes"]
    assert "ports" not in redis_service


def test_flower_has_basic_auth(compose: dict[str, Any]) -> None:
    flower = service(compose, "flower")
    argv = command(flower)
    app, subcommand = celery_parts(argv)
    assert (app, subcommand) == ("workers.app", "flower")
    env = env_example()
    assert f"--basic-auth={env['FLOWER_USER']}:{env['FLOWER_PASSWORD']}" in argv
    raw = COMPOSE.read_text(encoding="utf-8")
    assert "--basic-auth=${FLOWER_USER" in raw and ":${FLOWER_PASSWORD" in raw


def test_emulator_command_is_a_real_subcommand(compose: dict[str, Any]) -> None:
    argv = command(service(compose, "emulator"))
    assert argv[0] == "llm-throttle"
    args = build_parser().parse_args(argv[1:])
    assert args.command == "emulator" and args.host == "0.0.0.0" and args.port == 8099
    emulator_config_from_args(args)  # the flags make a valid emulator configuration


def test_workers_mount_a_config_that_loads_with_their_environment(
    compose: dict[str, Any],
) -> None:
    worker = service(compose, "worker")
    (mount,) = worker["volumes"]
    source = ROOT / mount["source"]
    assert source.is_file() and source.relative_to(ROOT).as_posix() == "deploy/throttle.toml"
    env = {k: str(v) for k, v in worker["environment"].items()}
    assert env["LLM_THROTTLE_CONFIG"] == mount["target"]
    config = load_config(source, env=env)
    password = env_example()["REDIS_PASSWORD"]
    for url in (config.redis.url, config.broker_url, config.result_backend):
        parts = urlsplit(url)
        assert (parts.hostname, parts.port, parts.password) == ("redis", 6379, password)
    assert len({config.redis.url, config.broker_url, config.result_backend}) == 3
    # The group's provider is the emulator service, on the port it listens on.
    emulator_args = build_parser().parse_args(command(service(compose, "emulator"))[1:])
    (provider,) = config.providers.values()
    base = urlsplit(provider.base_url)
    assert (base.hostname, base.port) == ("emulator", emulator_args.port)
    assert provider.credential is not None
    key_var = "LLM_THROTTLE_KEY_" + re.sub(r"[^A-Z0-9]", "_", provider.credential.upper())
    assert key_var in env
    assert config.groups


def test_flower_reads_the_same_config(compose: dict[str, Any]) -> None:
    worker, flower = service(compose, "worker"), service(compose, "flower")
    assert flower["volumes"] == worker["volumes"]
    for name in ("LLM_THROTTLE_CONFIG", "LLM_THROTTLE_BROKER_URL", "LLM_THROTTLE_RESULT_BACKEND"):
        assert flower["environment"][name] == worker["environment"][name]


def test_the_image_installs_the_ops_extra(compose: dict[str, Any]) -> None:
    for name in ("worker", "flower", "emulator", "gateway"):
        assert service(compose, name)["build"] == "."
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert 'pip install ".[ops,gateway]"' in text
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.removesuffix("*")
        assert f"COPY {package} ./{package}\n" in text, f"the image lacks {package}"
    project = pyproject["project"]
    assert any(dep.startswith("flower") for dep in project["optional-dependencies"]["ops"])
    assert project["scripts"]["llm-throttle"] == "tools.cli:main"


def test_the_gateway_serves_the_workers_config_with_its_keys(compose: dict[str, Any]) -> None:
    gateway, worker = service(compose, "gateway"), service(compose, "worker")
    args = build_parser().parse_args(command(gateway)[1:])
    assert args.command == "serve" and args.host == "0.0.0.0" and args.port == 8080
    assert gateway["volumes"] == worker["volumes"]
    env = {k: str(v) for k, v in gateway["environment"].items()}
    for name in ("LLM_THROTTLE_CONFIG", "LLM_THROTTLE_REDIS_URL", "LLM_THROTTLE_BROKER_URL"):
        assert env[name] == str(worker["environment"][name])
    assert not any(name.startswith("LLM_THROTTLE_KEY_") for name in env), "no provider key"
    assert gateway["ports"] == ["127.0.0.1:8080:8080"]
    config = load_config(ROOT / "deploy/throttle.toml", env=env)
    settings = gateway_settings(config.gateway)
    assert settings.grant_for("sk-demo-change-me") is not None
    assert ModelIndex.build(config, settings.providers).models()
