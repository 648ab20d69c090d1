"""Progress of ``allbatch run`` for people: a live bar on a terminal, periodic plain lines in a log.

The pipeline reports a ``RunProgress`` after every committed chunk (about every 2 s on a slow device,
see ``pipeline.INFER_CHUNK_SECONDS``). Rate and ETA count only the images the model runs in this
run; files committed by an earlier run (``--resume``) are shown as skipped, never as speed.

- stderr is a terminal: a Rich bar (done/total, skipped, img/s, elapsed, ETA), refreshed live.
- otherwise (a log file, a pipe, a batch system): one plain line at most every ``interval`` seconds
  and one when the run ends, on the ``allbatch.progress`` logger, e.g.
  ``progress 120/2556 (4.7%): 88 classified at 7.9 img/s, 32 already committed; elapsed 11s, ETA 5m08s``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from allbatch.run.config import ProgressCallback, RunProgress

log = logging.getLogger("allbatch.progress")

PLAIN_INTERVAL_SECONDS = 30.0
"""Seconds between plain progress lines when stderr is not a terminal."""


def format_duration(seconds: float | None) -> str:
    """``5m08s``, ``1h02m``, ``9s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def progress_line(p: RunProgress) -> str:
    """One self-contained line describing ``p`` (for logs)."""
    share = 100.0 * p.handled / p.total if p.total else 100.0
    rate = p.images_per_second
    speed = f" at {rate:.1f} img/s" if rate else ""
    skipped = f", {p.skipped} already committed" if p.skipped else ""
    return (
        f"progress {p.handled}/{p.total} ({share:.1f}%): {p.processed} classified{speed}{skipped}; "
        f"elapsed {format_duration(p.seconds)}, ETA {format_duration(p.eta_seconds)}"
    )


class PlainProgress:
    """Logs ``progress_line`` at most every ``interval`` seconds (and the last one at exit)."""

    def __init__(self, interval: float = PLAIN_INTERVAL_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self._last_logged: float | None = None
        self._pending: RunProgress | None = None

    def __call__(self, p: RunProgress) -> None:
        now = self.clock()
        if self._last_logged is None or now - self._last_logged >= self.interval or p.handled >= p.total:
            log.info("%s", progress_line(p))
            self._last_logged = now
            self._pending = None
        else:
            self._pending = p

    def __enter__(self) -> Self:
        self._last_logged = self.clock()  # the first line after one interval, not at once
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._pending is not None:  # the state at the end (e.g. an interrupted run) is always logged
            log.info("%s", progress_line(self._pending))


class BarProgress:
    """A transient Rich bar: done/total, skipped, img/s, elapsed, ETA (the rate and ETA from ``RunProgress``)."""

    def __init__(self, console: Console) -> None:
        self._bar = Progress(
            TextColumn("[bold]allbatch[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[skipped]}"),
            TextColumn("{task.fields[rate]} img/s"),
            TimeElapsedColumn(),
            TextColumn("ETA {task.fields[eta]}"),
            console=console,
            transient=True,
        )
        self._task = self._bar.add_task("images", total=None, skipped="", rate="-", eta="-")

    def __call__(self, p: RunProgress) -> None:
        rate = p.images_per_second
        self._bar.update(
            self._task,
            completed=p.handled,
            total=p.total,
            skipped=f"({p.skipped} skipped)" if p.skipped else "",
            rate=f"{rate:.1f}" if rate else "-",
            eta=format_duration(p.eta_seconds),
        )

    def __enter__(self) -> Self:
        self._bar.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._bar.stop()


@contextmanager
def progress_reporter(console: Console, *, quiet: bool, terminal: bool) -> Iterator[ProgressCallback | None]:
    """The callback for ``pipeline.run``: None when quiet, a bar on a terminal, plain log lines otherwise."""
    if quiet:
        yield None
    elif terminal:
        with BarProgress(console) as bar:
            yield bar
    else:
        with PlainProgress() as plain:
            yield plain
