"""``llm-throttle serve``: the gateway under uvicorn."""

from __future__ import annotations

import os

from gateway.settings import gateway_settings


def serve(config_path: str | None, host: str | None, port: int | None, workers: int = 1) -> int:
    """Serve until SIGINT/SIGTERM (uvicorn's own handling)."""
    import uvicorn

    if config_path:
        os.environ["LLM_THROTTLE_CONFIG"] = config_path
    from throttle.config import load_config

    settings = gateway_settings(load_config().gateway)  # errors before anything listens
    uvicorn.run(
        "gateway.app:create_app",
        factory=True,
        host=host or settings.host,
        port=port if port is not None else settings.port,
        workers=workers,
        log_level=os.environ.get("LLM_THROTTLE_GATEWAY_LOGLEVEL", "warning"),
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return 0
