"""The one rule for files a command writes besides results.h5 (CSV, HTML report, metrics JSON): never replace
an existing file unasked; ``--force`` (alias ``--overwrite``) replaces it. ``export``, ``report`` and
``eval --json`` share it, so the flag and the message are the same everywhere."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from allbatch.core.errors import UserInputError

ForceOption = Annotated[bool, typer.Option("--force", "--overwrite", help="Replace the output file(s) if they exist.")]
"""The option every such command takes (same names, same help)."""


def check_writable_target(target: Path, *, force: bool, example: str) -> None:
    """Refuse (UserInputError, before any work) a ``target`` that is a folder, or that exists without ``force``.

    ``example`` is a file name suggested inside a folder given by mistake (e.g. "report.html")."""
    if target.is_dir():
        raise UserInputError(f"{target} is a folder; name a file, e.g. {target / example}")
    if target.exists() and not force:
        raise UserInputError(f"{target} already exists; pass --force to replace it")
