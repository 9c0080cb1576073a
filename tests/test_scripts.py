"""The Lua loader (throttle/scripts.py): includes and the state hash's field names."""

from __future__ import annotations

import re
from importlib import resources

import pytest

from throttle import fields, scripts
from throttle.scripts import script_source

ENTRY_SCRIPTS = sorted(
    path.name
    for path in (resources.files("throttle") / "lua").iterdir()
    if path.name.endswith(".lua")
)


@pytest.mark.parametrize("name", ENTRY_SCRIPTS)
def test_every_script_assembles_without_directives_or_field_names_left(name: str) -> None:
    source = script_source(name)
    assert "--@include" not in source
    code = "\n".join(line.split("--")[0] for line in source.splitlines())
    assert not re.search(r"\bF_[A-Z_]+\b", code)


def test_a_field_name_becomes_its_literal() -> None:
    settle = script_source("settle.lua")
    assert f"rcall('HSET', state_key, '{fields.INCREASED}', now)" in settle


def test_an_unknown_field_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scripts, "LUA_NAMES", {})
    script_source.cache_clear()
    try:
        with pytest.raises(KeyError, match="F_PAUSE"):
            script_source("pause.lua")
    finally:
        monkeypatch.undo()
        script_source.cache_clear()
