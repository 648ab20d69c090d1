"""Terminal output at the CLI edge: one place decides how text reaches stdout/stderr.

Two rules hold for everything the commands print:

- **No hard wraps.** Rich wraps at the terminal width, and at 80 columns (or ``$COLUMNS``) when the
  stream is a pipe or a log file, which turns a one-line error into several lines that scripts and
  ``grep`` cannot match. Every console made here has ``soft_wrap=True`` (lines are never broken by
  Rich; a terminal still folds long lines visually) and errors are written as one line.
- **Untrusted text is shown, never interpreted.** File names and error messages can hold Rich
  markup (``[Malignant] Pre-B`` is a real folder name) and control characters (ESC sequences, CR,
  bidi overrides, lone surrogates from undecodable names); ``printable`` escapes the latter, and such
  text is passed as ``rich.text.Text`` (never parsed as markup).
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

from rich.console import Console
from rich.text import Text

from allbatch.core.safe_text import printable

__all__ = ["log_handler", "make_console", "print_error", "print_warning", "printable", "stderr_is_terminal"]


def make_console(*, stderr: bool = True, quiet: bool = False) -> Console:
    """A Rich console that never hard-wraps printed text (tables still fit the width)."""
    return Console(stderr=stderr, quiet=quiet, soft_wrap=True, highlight=False)


def print_error(message: str, *, prefix: str = "error") -> None:
    """Write ``prefix: message`` to stderr as exactly one line, whatever the terminal width or stream."""
    make_console().print(Text.assemble((f"{prefix}:", "bold red"), " ", printable(message)))


def print_warning(message: str) -> None:
    """Write ``warning: message`` to stderr as exactly one line."""
    make_console().print(Text.assemble(("warning:", "bold yellow"), " ", printable(message)))


class _PrintableFormatter(logging.Formatter):
    """Escapes control characters in the log message (file names reach it); tracebacks keep their lines."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's own method name
        record.message = printable(record.message)
        return super().formatMessage(record)


class _CurrentStderrHandler(logging.StreamHandler):
    """A StreamHandler on whatever ``sys.stderr`` is when a record is emitted (tests swap it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:  # StreamHandler.__init__ assigns it; the property wins
        pass


def stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def log_handler() -> logging.Handler:
    """A RichHandler when stderr is a terminal; otherwise plain timestamped lines (log files, pipes)."""
    if stderr_is_terminal():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=make_console(), show_path=False, show_time=False)
        handler.setFormatter(_PrintableFormatter("%(message)s"))
        return handler
    handler = _CurrentStderrHandler()
    handler.setFormatter(_PrintableFormatter("%(asctime)s allbatch %(levelname)s: %(message)s", datefmt="%Y-%m-%d %H:%M:%S"))
    return handler
