"""The ``llm-throttle`` command line: one function per subcommand.

To add a subcommand, write ``_add_<name>(subparsers)`` that registers its parser and
sets ``handler=<function taking the parsed args and returning an exit code>``, and
append it to ``_SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from throttle.errors import ConfigError, ThrottleError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    """The parser of every subcommand (tests parse deployment commands with it)."""
    parser = argparse.ArgumentParser(
        prog="llm-throttle", description="Distributed throttling of LLM API calls."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``llm-throttle``; returns the process exit code."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ThrottleError as exc:  # a broken config, an unreachable Redis, a missing extra
        print(f"llm-throttle {args.command}: {exc}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------- emulator


def _add_emulator(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "emulator",
        help="run the LLM provider emulator",
        description="Serve OpenAI/Anthropic/Azure/Gemini-style endpoints with rate limits. "
        "Flags override the --config file; --limits/--models replace its pools with one.",
    )
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
    p.set_defaults(handler=run_emulator)


def emulator_config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`EmulatorConfig` that the flags (over the config file) describe."""
    from testing.emulator import EmulatorConfig, load_config

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


def run_emulator(args: argparse.Namespace) -> int:
    """Serve the emulator until SIGINT/SIGTERM."""
    from testing.emulator import EmulatorServer

    server = EmulatorServer(emulator_config_from_args(args), host=args.host, port=args.port)

    def on_ready(base_url: str) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, server.request_stop)
        print(f"llm-throttle emulator listening on {base_url}", flush=True)

    asyncio.run(server.serve(on_ready))
    return 0


# ------------------------------------------------------------------- demo


def _add_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole stack locally and report what the throttle achieved",
        description="Start redis-server, the provider emulator and two Celery workers, "
        "run completions over two models and three tenants with a progress bar, and "
        "report utilization of every limit, 429s, parked tasks and waits.",
    )
    p.add_argument("--tasks", type=_positive_int, default=500, help="completions to run")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the stack running after the report (to look at it in Flower); Ctrl-C stops",
    )
    p.set_defaults(handler=run_demo)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def run_demo(args: argparse.Namespace) -> int:
    """The demo; Celery is imported only here, so the emulator runs without it."""
    from tools.demo import DemoOptions
    from tools.demo import run_demo as run

    return run(DemoOptions(tasks=args.tasks, keep=args.keep))


# ------------------------------------------------------------------- status


def _add_status(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "status",
        help="show every limit group: capacity, level, AIMD rate, pause, in-flight, parked",
        description="Read every configured limit group's state from Redis (server clock) "
        "and print capacity (configured, learned), level and effective rate per dimension, "
        "the AIMD multiplier, the pause gate, in-flight leases, parked backlog and the last "
        "429 decrease. Exit code 2 when the config is invalid or Redis is unreachable.",
    )
    p.add_argument("--config", help="throttle TOML file (default: $LLM_THROTTLE_CONFIG)")
    p.add_argument("--json", action="store_true", help="print one JSON document (for scripts)")
    p.add_argument(
        "--watch",
        type=_positive_float,
        metavar="SECONDS",
        help="refresh every SECONDS until Ctrl-C",
    )
    p.set_defaults(handler=run_status)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {value}")
    return value


def run_status(args: argparse.Namespace) -> int:
    """Print the status once, or every ``--watch`` seconds until Ctrl-C."""
    import time

    from throttle.config import load_config
    from throttle.connect import connect
    from throttle.errors import StorageError
    from throttle.status import read_status, redact_url
    from tools.status_view import render_table, status_json

    config = load_config(args.config)
    client = connect(config.redis.url, timeout_s=config.redis.socket_timeout_s)
    try:
        while True:
            try:
                now_ms, statuses = read_status(client, config)
            except StorageError as exc:
                print(
                    f"llm-throttle status: {redact_url(config.redis.url)}: {exc}", file=sys.stderr
                )
                return 2
            text = status_json(statuses, now_ms) if args.json else render_table(statuses)
            if args.watch and not args.json and sys.stdout.isatty():
                sys.stdout.write("\x1b[H\x1b[2J")
            print(text, flush=True)
            if not args.watch:
                return 0
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()


# ------------------------------------------------------------------- run


def _add_run(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "run",
        help="run an OpenAI-format batch file through the throttle, resumably",
        description="Enqueue every line of an OpenAI batch input file (JSONL with custom_id, "
        "method, url, body), show progress with ETA and throughput, and write one result or "
        "error record per line to the output in input order. Rerun the same command after a "
        "crash or Ctrl-C to resume: finished lines are not redone, no line runs twice.",
    )
    p.add_argument("input", help="requests.jsonl (OpenAI batch input format)")
    p.add_argument("-o", "--output", required=True, help="results.jsonl (appended to on resume)")
    p.add_argument(
        "--provider", help="configured provider to send to (default: the only one configured)"
    )
    p.add_argument("--config", help="throttle TOML file (default: $LLM_THROTTLE_CONFIG)")
    p.set_defaults(handler=run_batch)


def run_batch(args: argparse.Namespace) -> int:
    """Run or resume a batch file; Celery is imported only here."""
    from pathlib import Path

    from throttle.config import load_config
    from throttle.errors import StorageError
    from tools.batch import run_batch as run

    config = load_config(args.config)
    try:
        return run(Path(args.input), Path(args.output), provider=args.provider, config=config)
    except (OSError, StorageError) as exc:
        print(f"llm-throttle run: {exc}", file=sys.stderr)
        return 2


# ------------------------------------------------------------------- serve


def _add_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve the OpenAI-compatible HTTP front door (the gateway)",
        description="Serve POST /v1/chat/completions, POST /v1/messages, GET /v1/models, "
        "GET /v1/limits, GET /health and /metrics; every completion runs as the throttled "
        "task. Settings in the [gateway] table of the throttle config (needs the gateway "
        "extra: pip install 'llm-throttle[gateway]').",
    )
    p.add_argument("--config", help="throttle TOML file (default: $LLM_THROTTLE_CONFIG)")
    p.add_argument("--host", help="bind address (default: gateway.host)")
    p.add_argument("--port", type=int, help="port (default: gateway.port; 0 = any free port)")
    p.add_argument("--workers", type=_positive_int, default=1, help="server processes")
    p.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from gateway.serve import serve

    return serve(args.config, args.host, args.port, args.workers)


def _add_gateway_key(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "gateway-key",
        help="make a gateway API key and print its [gateway.keys] line",
        description="Print a new random gateway key (give it to the caller) and the line "
        "for [gateway.keys], which holds only its SHA-256 digest.",
    )
    p.add_argument("--tenant", help="the tenant the key runs as")
    p.add_argument("--lane", help="the lane the key runs in")
    p.set_defaults(handler=run_gateway_key)


def run_gateway_key(args: argparse.Namespace) -> int:
    import hashlib
    import secrets

    key = "gk-" + secrets.token_urlsafe(32)
    grant = ", ".join(
        f"{name} = {json.dumps(value)}"
        for name, value in (("tenant", args.tenant), ("lane", args.lane))
        if value is not None
    )
    digest = hashlib.sha256(key.encode()).hexdigest()
    print(f"key: {key}")
    print(f'"sha256:{digest}" = {{ {grant} }}')
    return 0


#: Every subcommand's registration function, in help order.
_SUBCOMMANDS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    _add_demo,
    _add_emulator,
    _add_gateway_key,
    _add_run,
    _add_serve,
    _add_status,
]


if __name__ == "__main__":
    sys.exit(main())
