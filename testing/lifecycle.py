"""What the embedded servers, the emulator and the local stack share as context
managers: leaving the ``with`` block always stops them (each enters its own way)."""

from __future__ import annotations

from types import TracebackType


class StopsOnExit:
    """A context manager whose exit calls :meth:`stop`."""

    def stop(self) -> None:
        raise NotImplementedError

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
