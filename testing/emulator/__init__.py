"""A local LLM provider emulator that pushes back like the real services.

It speaks OpenAI, Anthropic, Azure OpenAI and Gemini on their usual routes, enforces
their rate limits with their accounting, answers with their exact headers and 429
bodies, injects faults on a schedule, and counts what its clients did. See
``shared/reference/providers.md`` §8 for the specification.

Modules, one job each: ``config`` (the whole config, its file form), ``kinds`` (its
enums), ``limits``, ``fault_config``, ``fields`` (typed reads of a table), ``clock``,
``meters`` (bucket/sliding log), ``calls`` (request parsing, costs), ``admission``,
``pools``, ``profiles/*`` (wire formats), ``faults``, ``stats``, ``request`` (a
completion request, its key), ``answers`` (one request's answer), ``engine`` (the state,
without sockets), ``http`` (asyncio HTTP/1.1 framing), ``app`` (routes), ``server``
(thread/process).
"""

from __future__ import annotations

from testing.emulator.clock import Clock, ManualClock, MonotonicClock
from testing.emulator.config import EmulatorConfig, LatencyConfig, PoolConfig, load_config
from testing.emulator.engine import Emulator
from testing.emulator.fault_config import FaultConfig
from testing.emulator.kinds import ClockKind, FaultKind, MeterKind, OutputMode, Profile
from testing.emulator.limits import LimitConfig, parse_limits, parse_limits_text
from testing.emulator.process import EmulatorProcess
from testing.emulator.replies import Deferred, Reply
from testing.emulator.request import CompletionRequest
from testing.emulator.server import EmulatorServer

__all__ = [
    "Clock",
    "ClockKind",
    "CompletionRequest",
    "Deferred",
    "Emulator",
    "EmulatorConfig",
    "EmulatorProcess",
    "EmulatorServer",
    "FaultConfig",
    "FaultKind",
    "LatencyConfig",
    "LimitConfig",
    "ManualClock",
    "MeterKind",
    "MonotonicClock",
    "OutputMode",
    "PoolConfig",
    "Profile",
    "Reply",
    "load_config",
    "parse_limits",
    "parse_limits_text",
]
