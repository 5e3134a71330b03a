"""A signal that asked the build to stop, remembered.

The signal handler (baker.cli) raises KeyboardInterrupt where the main thread is, so every
cleanup on the way out runs. But Python drops an exception raised inside some of its own
hooks: one that lands while a subprocess is being forked is printed as "Exception ignored"
and lost, and the build went on to the end. So the handler also notes the signal here, and
the long waits (for SSH, between steps and between measured boots) call check()."""

from __future__ import annotations

import signal

_pending: int | None = None


def note(signum: int) -> None:
    global _pending
    _pending = signum


def check() -> None:
    """Raise KeyboardInterrupt if a stop was asked for and not acted on yet."""
    global _pending
    if _pending is not None:
        signum, _pending = _pending, None
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")
