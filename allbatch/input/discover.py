"""Discover input images under a root folder: recursive, deterministic, each file once.

Order is a natural sort of the relative path ("img2" before "img10"), folder by folder. Extensions are
matched case-insensitively. Symlink policy is explicit: "follow" (default) follows links to files and
folders, visiting each real folder once (no cycles) and each real file once (the first path in sort
order wins); "skip" ignores every symlink. A folder that cannot be listed becomes an entry with a
``problem`` so it gets a row with status "unreadable" instead of vanishing. Names that are not valid
UTF-8 are kept (escaped losslessly in ``relpath``, see ``allbatch.core.pathtext``); ``path`` stays the real one.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from allbatch.core.errors import UserInputError
from allbatch.core.pathtext import fs_to_text

log = logging.getLogger("allbatch.input.discover")

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp"})
SymlinkPolicy = Literal["follow", "skip"]
_DIGITS = re.compile(r"(\d+)")


@dataclass(frozen=True)
class DiscoveredFile:
    """One input: absolute ``path``, ``relpath`` (POSIX, relative to the root, as UTF-8 text: see
    ``allbatch.core.pathtext``) and a listing problem."""

    path: Path
    relpath: str
    problem: str | None = None


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key: digit runs compare as numbers, the rest case-folded ("a2" < "A10")."""
    return tuple((0, int(part)) if part.isdigit() else (1, part.casefold()) for part in _DIGITS.split(name) if part)


def discover(root: Path, symlinks: SymlinkPolicy = "follow") -> list[DiscoveredFile]:
    """All image files under ``root`` (or ``root`` itself when it is one file), in natural order.

    Raises:
        UserInputError: ``root`` does not exist, or is a file that is not an image.
    """
    root = Path(root)
    if not root.exists():
        raise UserInputError(f"input folder not found: {root}")
    if root.is_file():
        if root.suffix.lower() not in IMAGE_EXTENSIONS:
            raise UserInputError(f"{root} is not an image ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        return [DiscoveredFile(path=root.resolve(), relpath=fs_to_text(root.name))]
    found: list[DiscoveredFile] = []
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    _walk(root.resolve(), "", symlinks, found, seen_dirs, seen_files)
    return found


def _walk(
    folder: Path,
    prefix: str,
    symlinks: SymlinkPolicy,
    found: list[DiscoveredFile],
    seen_dirs: set[tuple[int, int]],
    seen_files: set[tuple[int, int]],
) -> None:
    try:
        stat = folder.stat()
        if (stat.st_dev, stat.st_ino) in seen_dirs:
            log.debug("folder %s already visited (symlink cycle or alias)", folder)
            return
        seen_dirs.add((stat.st_dev, stat.st_ino))
        with os.scandir(folder) as listing:
            entries = sorted(listing, key=lambda entry: natural_key(entry.name))
    except OSError as exc:
        found.append(
            DiscoveredFile(path=folder, relpath=fs_to_text(prefix.rstrip("/") or "."), problem=f"cannot list folder: {exc.strerror or exc}")
        )
        return
    for entry in entries:
        relpath = prefix + entry.name
        try:
            if entry.is_symlink() and symlinks == "skip":
                continue
            if entry.is_dir(follow_symlinks=True):
                _walk(Path(entry.path), relpath + "/", symlinks, found, seen_dirs, seen_files)
            elif entry.is_file(follow_symlinks=True) and Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                info = entry.stat(follow_symlinks=True)
                if (info.st_dev, info.st_ino) in seen_files:
                    continue
                seen_files.add((info.st_dev, info.st_ino))
                found.append(DiscoveredFile(path=Path(entry.path), relpath=fs_to_text(relpath)))
            elif entry.is_symlink() and Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(
                    DiscoveredFile(path=Path(entry.path), relpath=fs_to_text(relpath), problem="cannot stat: broken symbolic link")
                )
        except OSError as exc:  # a dangling link or an entry that vanished while listing
            if Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(
                    DiscoveredFile(path=Path(entry.path), relpath=fs_to_text(relpath), problem=f"cannot stat: {exc.strerror or exc}")
                )
