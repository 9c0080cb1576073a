"""The ``llm-throttle`` command line: one function per subcommand.

To add a subcommand, write ``_add_<name>(subparsers)`` that registers its parser and
sets ``handler=<function taking the parsed args and returning an exit code>``, and
append it to ``_SUBCOMMANDS``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from gateway.serve import positive_int
from throttle.errors import ThrottleError

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
    from testing.emulator import cli as emulator_cli

    p = subparsers.add_parser(
        "emulator", help="run the LLM provider emulator", description=emulator_cli.DESCRIPTION
    )
    emulator_cli.add_arguments(p)
    p.set_defaults(handler=run_emulator)


def run_emulator(args: argparse.Namespace) -> int:
    """Serve the emulator until SIGINT/SIGTERM."""
    from testing.emulator import cli as emulator_cli

    return emulator_cli.run(args)


# ------------------------------------------------------------------- demo


def _add_demo(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "demo",
        help="run the whole stack locally and report what the throttle achieved",
        description="Start redis-server, the provider emulator and two Celery workers, "
        "run completions over two models and three tenants with a progress bar, and "
        "report utilization of every limit, 429s, parked tasks and waits.",
    )
    p.add_argument("--tasks", type=positive_int, default=500, help="completions to run")
    p.add_argument(
        "--keep",
        action="store_true",
        help="keep the stack running after the report (to look at it in Flower); Ctrl-C stops",
    )
    p.set_defaults(handler=run_demo)


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
    from gateway.serve import add_arguments

    add_arguments(p)
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
