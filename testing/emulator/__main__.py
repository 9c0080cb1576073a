"""``python -m testing.emulator``: the provider emulator as a process."""

from __future__ import annotations

import sys

from testing.emulator.cli import main

sys.exit(main())
