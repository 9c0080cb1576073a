"""Sizes a newcomer can read: no module of the packages over 400 lines, and no Lua
entry script with more than 80 lines of code (its header, the KEYS/ARGV contract, not
counted; the steps live in ``throttle/lua/lib``)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("throttle", "workers", "tasks", "testing", "gateway", "tools")
MODULE_LINES = 400
ENTRY_SCRIPT_CODE_LINES = 80


def code_lines(lua: str) -> int:
    """Lines after the leading ``--[[ ... ]]`` header that are neither blank nor comments."""
    body = lua.split("]]\n", 1)[1] if lua.startswith("--[[") else lua
    return sum(
        1 for line in body.splitlines() if line.strip() and not line.strip().startswith("--")
    )


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MODULE_LINES
    }
    assert long == {}


def test_no_lua_entry_script_has_more_than_80_lines_of_code() -> None:
    long = {
        path.name: n
        for path in (ROOT / "throttle" / "lua").glob("*.lua")
        if (n := code_lines(path.read_text(encoding="utf-8"))) > ENTRY_SCRIPT_CODE_LINES
    }
    assert long == {}


def test_code_lines_skip_the_header_blanks_and_comments() -> None:
    assert code_lines("--[[ a\n  KEYS[1] x\n]]\n-- note\n\nlocal a = 1\nreturn a\n") == 2
