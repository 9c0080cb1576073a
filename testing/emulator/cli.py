"""The emulator's command line: its flags (over an optional config file), shared by
``llm-throttle emulator`` and ``python -m testing.emulator`` (what
:class:`~testing.emulator.process.EmulatorProcess` runs)."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from testing.emulator.config import EmulatorConfig, load_config
from testing.emulator.server import EmulatorServer
from throttle.errors import ConfigError

#: What ``llm-throttle emulator --help`` says it does.
DESCRIPTION = (
    "Serve OpenAI/Anthropic/Azure/Gemini-style endpoints with rate limits. "
    "Flags override the --config file; --limits/--models replace its pools with one."
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The emulator's flags, on ``p``."""
    p.add_argument("--config", help="TOML or JSON emulator config file")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8099, help="0 = any free port")
    p.add_argument("--profile", choices=["openai", "anthropic", "azure", "gemini"])
    p.add_argument("--limits", help="one pool's limits, e.g. requests=60/s,tokens=20000/s")
    p.add_argument("--models", help="comma-separated model patterns of that pool (default *)")
    p.add_argument("--ttft-ms", type=float, help="time to first token, milliseconds")
    p.add_argument("--tokens-per-s", type=float, help="generation speed; 0 = instantaneous")
    p.add_argument("--count-rejected", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--output-mode", choices=["realtime", "reserve"])
    p.add_argument("--default-max-tokens", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--manual-clock", action="store_true", help="enable /__emu/clock/advance")
    p.add_argument("--no-retry-after", action="store_true", help="omit retry-after on 429s")
    p.add_argument("--key", action="append", default=[], metavar="KEY=ORG")
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="kind=rate_limit,start_s=2,duration_s=5,retry_after_s=3 or a JSON object",
    )


def emulator_config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`EmulatorConfig` that the flags (over the config file) describe."""
    data: dict[str, Any] = load_config(args.config).to_mapping() if args.config else {}
    overrides = {
        "profile": args.profile,
        "count_rejected": args.count_rejected,
        "output_mode": args.output_mode,
        "default_max_tokens": args.default_max_tokens,
        "seed": args.seed,
    }
    data.update({key: value for key, value in overrides.items() if value is not None})
    if args.manual_clock:
        data["clock"] = "manual"
    if args.no_retry_after:
        data["retry_after_header"] = False
    latency = data.setdefault("latency", {})
    if args.ttft_ms is not None:
        latency["ttft_ms"] = args.ttft_ms
    if args.tokens_per_s is not None:
        latency["tokens_per_s"] = args.tokens_per_s
    if args.limits or args.models:
        if not args.limits:
            raise ConfigError("--models: give --limits for that pool too")
        pairs = dict(item.split("=", 1) for item in args.limits.split(",") if "=" in item)
        models = [m.strip() for m in (args.models or "*").split(",") if m.strip()]
        data["pools"] = [{"name": "default", "models": models, "limits": pairs}]
    for item in args.key:
        key, sep, org = item.partition("=")
        if not sep:
            raise ConfigError(f"--key: {item!r} is not KEY=ORG")
        data.setdefault("keys", {})[key] = org
    data["faults"] = [*data.get("faults", []), *(_fault_spec(text) for text in args.fault)]
    return EmulatorConfig.from_mapping(data)


def _fault_spec(text: str) -> dict[str, Any]:
    """``kind=slow,delay_ms=200`` (numbers and true/false converted) or a JSON object."""
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"--fault: invalid JSON: {exc}") from exc
        if not isinstance(value, dict):
            raise ConfigError("--fault: expected a JSON object")
        return value
    spec: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--fault: {item!r} is not key=value")
        spec[key.strip()] = _scalar(raw.strip())
    return spec


def _scalar(raw: str) -> Any:
    if raw in ("true", "false"):
        return raw == "true"
    for convert in (int, float):
        try:
            return convert(raw)
        except ValueError:
            pass
    return raw


def run(args: argparse.Namespace) -> int:
    """Serve the emulator until SIGINT/SIGTERM."""
    server = EmulatorServer(emulator_config_from_args(args), host=args.host, port=args.port)

    def on_ready(base_url: str) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.request_stop)
        print(f"llm-throttle emulator listening on {base_url}", flush=True)

    asyncio.run(server.serve(on_ready))
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m testing.emulator``: serve until SIGINT/SIGTERM; exit code 2 on a bad
    configuration."""
    parser = argparse.ArgumentParser(prog="python -m testing.emulator", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except ConfigError as exc:
        print(f"emulator: {exc}", file=sys.stderr)
        return 2
