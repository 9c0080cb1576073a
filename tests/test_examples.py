"""examples/fastapi_app.py runs as its docstring says: uvicorn serves it beside a real
stack (the ``examples`` extra, which make installs), and a request goes through
``aenqueue``, a worker and the emulator."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from testing.harness import LocalStack
from testing.redis_server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_the_fastapi_example_answers_through_the_throttle(
    stacks: list[LocalStack], tmp_path: Path
) -> None:
    from test_e2e import emulator

    document = {
        "providers": {"openai": {"profile": "openai", "base_url": "emulator"}},
        "groups": {"openai:mini": {"provider": "openai", "models": ["gpt-4o-mini"]}},
    }
    document["groups"]["openai:mini"].update(requests="50/s", tokens="2000/s")  # type: ignore[attr-defined]
    emulated = emulator({"default": ("gpt-4o-mini", "requests=100/s,tokens=100000/s")})
    stack = LocalStack(emulated, document)
    stacks.append(stack.start())
    stack.start_workers(1, concurrency=4)
    port = free_port()
    with open(tmp_path / "app.log", "wb") as log:
        app = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--host", "127.0.0.1",
             "--port", str(port)],
            cwd=REPO_ROOT, env=stack.env(), stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/summaries"
        params = {"text": "A long text.", "tenant": "acme"}
        deadline, reply = time.monotonic() + 30, None
        while reply is None and time.monotonic() < deadline and app.poll() is None:
            try:
                reply = requests.post(url, params=params, timeout=30)
            except requests.ConnectionError:
                time.sleep(0.2)
        assert reply is not None, (tmp_path / "app.log").read_text()
        assert reply.status_code == 200, reply.text
        assert reply.json() == {"summary": "This is an emulated completion."}
        too_long = {**params, "text": "word " * 5000}  # more tokens than the group's capacity
        refused = requests.post(url, params=too_long, timeout=30)
        assert refused.status_code == 400 and "capacity" in refused.json()["detail"], refused.text
    finally:
        app.terminate()
        app.wait(timeout=15)
    sent = requests.get(stack.emulator.base_url + "/__emu/requests", timeout=10).json()
    assert [r["body"]["temperature"] for r in sent["requests"]] == [0.2]
