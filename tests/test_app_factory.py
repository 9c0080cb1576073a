"""The Celery app factory (workers/app.py) and the app a send goes through
(tasks.completion.sending_app). Each case runs in a fresh interpreter: the default app
and Celery's current app are process-wide state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CONFIG = """
[redis]
url = "redis://127.0.0.1:1/0"
[providers.openai]
base_url = "http://127.0.0.1:9"
[groups."openai:mini"]
provider = "openai"
models = ["gpt-4o-mini"]
requests = "60/min"
"""


def run(code: str, config: Path | None = None) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_THROTTLE")}
    if config is not None:
        env["LLM_THROTTLE_CONFIG"] = str(config)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_importing_the_app_module_makes_no_app() -> None:
    found = run(
        "import json, workers.app, tasks\n"
        "from celery import current_app\n"
        "print(json.dumps({'made': workers.app._default is not None,"
        " 'current': current_app.main}))"
    )
    assert found == {"made": False, "current": "default"}


def test_a_bare_send_goes_through_the_default_app_current_in_every_thread(tmp_path: Path) -> None:
    config = tmp_path / "throttle.toml"
    config.write_text(CONFIG, encoding="utf-8")
    found = run(
        "import json, threading\n"
        "from tasks.completion import sending_app\n"
        "from workers.app import default_app\n"
        "from workers.app_config import app_config\n"
        "app = sending_app()\n"
        "seen = []\n"
        "from celery import current_app\n"
        "check = lambda: seen.append(current_app._get_current_object() is app)\n"
        "t = threading.Thread(target=check); t.start()\n"
        "t.join()\n"
        "print(json.dumps({'default': app is default_app(), 'other_thread': seen[0],"
        " 'broker': app.conf.broker_url, 'groups': list(app_config(app).groups)}))",
        config,
    )
    assert found == {
        "default": True,
        "other_thread": True,
        "broker": "redis://127.0.0.1:1/0",
        "groups": ["openai:mini"],
    }


def test_a_users_own_app_is_kept_and_given_the_config(tmp_path: Path) -> None:
    config = tmp_path / "throttle.toml"
    config.write_text(CONFIG, encoding="utf-8")
    found = run(
        "import json\n"
        "from celery import Celery\n"
        "from tasks.completion import sending_app\n"
        "from workers.app_config import app_config\n"
        "mine = Celery('mine', broker='redis://127.0.0.1:2/5')\n"
        "app = sending_app()\n"
        "print(json.dumps({'mine': app is mine, 'groups': list(app_config(app).groups)}))",
        config,
    )
    assert found == {"mine": True, "groups": ["openai:mini"]}


def test_celery_finds_the_default_app_in_the_module(tmp_path: Path) -> None:
    config = tmp_path / "throttle.toml"
    config.write_text(CONFIG, encoding="utf-8")
    found = run(
        "import json\n"
        "from celery.app.utils import find_app\n"
        "import workers.app\n"
        "app = find_app('workers.app')\n"
        "print(json.dumps({'default': app is workers.app.default_app(),"
        " 'steps': sorted(s.__name__ for s in app.steps['worker'])}))",
        config,
    )
    assert found == {"default": True, "steps": ["DispatcherStep", "HeartbeatStep", "MetricsStep"]}
