"""SIGINT (Ctrl-C) and SIGTERM (a batch system's kill) become a clean stop of ``allbatch run``.

The first signal sets an event that the pipeline checks between inference chunks (about every 2 s on
a slow device): the chunk in flight and every queued row are committed, and the CLI prints what was
kept and exits 130 (SIGINT) or 143 (SIGTERM), the shell's 128 + signal number. A second signal stops
at once (KeyboardInterrupt, or the default SIGTERM action): every committed row is still safe (the
results file survives a kill at any moment), only the chunk in flight is redone by ``--resume``.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopRequest:
    """The event the pipeline polls, and which signal set it."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signal: signal.Signals | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signal or signal.SIGINT, 130)

    @property
    def name(self) -> str:
        return (self.signal or signal.SIGINT).name


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Install the SIGINT/SIGTERM handlers for the block (main thread only; elsewhere a no-op), then
    restore the previous ones."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if request.event.is_set():  # the second signal: stop now
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if signum == signal.SIGTERM:
                signal.raise_signal(signal.SIGTERM)
            raise KeyboardInterrupt
        request.signal = signal.Signals(signum)
        request.event.set()

    previous = {sig: signal.signal(sig, handle) for sig in EXIT_CODES}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
