"""``llm-throttle serve`` (and ``python -m gateway``): the gateway under uvicorn."""

from __future__ import annotations

import argparse
import os
from typing import Any

from gateway.settings import gateway_settings
from throttle.errors import ConfigError


def serve(config_path: str | None, host: str | None, port: int | None, workers: int = 1) -> int:
    """Serve until SIGINT/SIGTERM (uvicorn's own handling). One process serves an app
    made here for the config; several each make their own from ``LLM_THROTTLE_CONFIG``
    (set to ``config_path`` for them: the environment is how they get it)."""
    try:
        import uvicorn

        from gateway.app import create_app
    except ImportError as exc:  # starlette or uvicorn missing
        raise ConfigError(
            f"the gateway needs the gateway extra (pip install 'llm-throttle[gateway]'): {exc}"
        ) from None
    from throttle.config import CONFIG_ENV, load_config
    from workers.app import create_app as create_celery_app

    config = load_config(config_path)
    settings = gateway_settings(config.gateway)  # errors before anything listens
    options: dict[str, Any] = {
        "host": host or settings.host,
        "port": port if port is not None else settings.port,
        "log_level": os.environ.get("LLM_THROTTLE_GATEWAY_LOGLEVEL", "warning"),
        "access_log": False,
        "timeout_graceful_shutdown": 5,
    }
    if workers == 1:
        uvicorn.run(create_app(create_celery_app(config)), **options)
        return 0
    if config_path:
        os.environ[CONFIG_ENV] = config_path
    uvicorn.run("gateway.app:create_app", factory=True, workers=workers, **options)
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``llm-throttle serve``, on ``p``."""
    p.add_argument("--config", help="throttle TOML file (default: $LLM_THROTTLE_CONFIG)")
    p.add_argument("--host", help="bind address (default: gateway.host)")
    p.add_argument("--port", type=int, help="port (default: gateway.port; 0 = any free port)")
    p.add_argument("--workers", type=positive_int, default=1, help="server processes")


def positive_int(text: str) -> int:
    """An argparse type: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    """``python -m gateway``: serve until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m gateway")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return serve(args.config, args.host, args.port, args.workers)
