"""``python -m gateway``: the gateway as a process (what the local stack starts)."""

from __future__ import annotations

import sys

from gateway.serve import main

sys.exit(main())
