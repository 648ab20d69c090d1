"""A worker-like child process for the parent-death tests: it floods its progress queue with far more than a
pipe holds (so that its feeder thread blocks once nobody reads), then waits for the stop that the parent's death
sets (``allbatch.run.local.stop_when_parent_dies``), and returns."""

from __future__ import annotations

import threading
from typing import Any

from allbatch.run.local import stop_when_parent_dies

FLOOD_MESSAGES = 4000
MESSAGE_BYTES = 1000
"""4 MB queued: more than any pipe holds (64 KiB by default, 1 MiB at most without privileges)."""


def flood_then_wait_for_stop(messages: Any) -> None:
    stop = threading.Event()
    stop_when_parent_dies(stop, messages)
    for k in range(FLOOD_MESSAGES):
        messages.put(("progress", 0, k, 0, FLOOD_MESSAGES, "x" * MESSAGE_BYTES))
    stop.wait()


def parent_main() -> None:
    """Run as a script: start one such child with the spawn method, print its pid, and never read its queue."""
    import multiprocessing
    import time

    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    child = context.Process(target=flood_then_wait_for_stop, args=(messages,))
    child.start()
    print(child.pid, flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    parent_main()
