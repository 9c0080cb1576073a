"""What every benchmark writes next to its tables: the machine it ran on, and the raw
figures as JSON under ``bench/results/<kind>-<UTC time>.json`` (ignored by git)."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    import celery

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "celery": celery.__version__,
        "load_avg": os.getloadavg(),
    }


def write_raw(kind: str, payload: Mapping[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{kind}-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    path.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
    return path
