"""Child processes that die with the process that started them.

The local stack's redis-server, emulator and workers run in sessions of their own (a
Ctrl-C in the terminal reaches only the parent, which stops them in order). If that
parent is SIGKILLed it cannot stop them, so each child asks the kernel for a SIGTERM
when its parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``; elsewhere nothing is done).
The signal follows the thread that started the child: start them from a thread that
lives as long as they should.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

#: linux/prctl.h
_PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` (None where it cannot be done)."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    parent = os.getpid()

    def arm() -> None:  # runs in the child, between fork and exec
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return arm
