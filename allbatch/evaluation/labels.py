"""Ground truth from folder names (each image's class is the name of the folder that holds it) or from a
labels file (``--labels labels.csv``: one row per image, path or file name and class; for archives laid out
by patient, mixed folders included).

Built-in names are matched case- and punctuation-insensitively, so the layouts people actually have
work without options: ``Benign``/``Early``/``Pre``/``Pro`` (this project's copy of the data set) and
the Kaggle release's ``Benign``, ``[Malignant] early Pre-B``, ``[Malignant] Pre-B``,
``[Malignant] Pro-B``, plus ``hematogones`` (what the benign class is). Anything else is taken only
from a user map (``--class-map FOLDER=Class``, or a JSON file ``{"FOLDER": "Class"}``); folders that
neither knows are reported as unlabelled, never guessed.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch.core.errors import UserInputError

_DEFAULT_KEYS: dict[str, str] = {
    **dict.fromkeys(("benign", "hematogone", "hematogones", "benignhematogone", "benignhematogones"), "Benign"),
    **dict.fromkeys(("early", "earlypre", "earlypreb", "earlypreball"), "Early"),
    **dict.fromkeys(("pre", "preb", "preball"), "Pre"),
    **dict.fromkeys(("pro", "prob", "proball"), "Pro"),
}
"""Normalised folder name (see ``default_key``) -> class name."""


def default_key(folder: str) -> str:
    """The tolerant key of a folder name: lower case, letters and digits only, a leading
    "malignant" dropped. ``"[Malignant] early Pre-B"`` -> ``"earlypreb"``."""
    key = re.sub(r"[^0-9a-z]", "", folder.casefold())
    return key.removeprefix("malignant")


def user_key(folder: str) -> str:
    """How user-map folder names are compared: case-insensitive, surrounding blanks ignored."""
    return " ".join(folder.split()).casefold()


def default_class_for(folder: str) -> str | None:
    """The built-in class name for ``folder``, or None when the name is not one we know."""
    return _DEFAULT_KEYS.get(default_key(folder))


def parse_class_map(items: Sequence[str], class_names: Sequence[str]) -> dict[str, str]:
    """User map entries -> {user_key(folder): class name}.

    Each item is ``FOLDER=Class`` (split at the last ``=``) or the path of a JSON file holding an
    object ``{"FOLDER": "Class", ...}``. Class names are matched case-insensitively against
    ``class_names``. Later entries override earlier ones. UserInputError on anything malformed.
    """
    canonical = {name.casefold(): name for name in class_names}
    out: dict[str, str] = {}
    for item in items:
        if "=" in item:
            folder, _, cls = item.rpartition("=")
            pairs = [(folder, cls)]
            where = f"--class-map {item!r}"
        else:
            pairs = list(_load_json_map(Path(item)).items())
            where = f"class map {item}"
        for folder, cls in pairs:
            if not folder.strip():
                raise UserInputError(f"{where}: empty folder name (expected FOLDER=Class)")
            name = canonical.get(cls.strip().casefold())
            if name is None:
                raise UserInputError(f"{where}: unknown class {cls.strip()!r}; classes are {', '.join(class_names)}")
            out[user_key(folder)] = name
    return out


def _load_json_map(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise UserInputError(f"--class-map {str(path)!r} is neither FOLDER=Class nor an existing JSON file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserInputError(f"cannot read class map {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise UserInputError(f"class map {path} must be a JSON object of folder name -> class name strings")
    return data


def folder_of(relpath: str, input_root: str | None = None) -> str:
    """The name of the folder that holds the image at ``relpath`` (POSIX, relative to the input root).

    An image directly in the input root has no parent in its relative path; its folder is then the
    root's own name (``allbatch run data/Benign`` labels its images Benign), or for a run on a
    single file, the name of that file's folder. "" when unknown (no ``input_root``).
    """
    parent = PurePosixPath(relpath).parent.name
    if parent or not input_root:
        return parent
    root = PurePosixPath(Path(input_root).as_posix())
    return root.parent.name if root.name == relpath else root.name


@dataclass
class LabelAssignment:
    """Truth for each row of a results table, and what could not be labelled.

    truth: (n,) int64 class index into ``class_names``, -1 when the folder maps to no class.
    folders: the folder name of each row. folder_classes: every folder seen -> its class name or None.
    """

    truth: npt.NDArray[np.int64]
    folders: list[str]
    folder_classes: dict[str, str | None] = field(default_factory=dict)


def assign_labels(
    paths: Sequence[str],
    class_names: Sequence[str],
    *,
    user_map: Mapping[str, str] | None = None,
    use_defaults: bool = True,
    input_root: str | None = None,
) -> LabelAssignment:
    """Class index of each path from its folder name: the user map first, then the built-in names.

    ``user_map`` is ``parse_class_map``'s output. A built-in class missing from ``class_names``
    (a model with other classes) counts as unknown.
    """
    index = {name: i for i, name in enumerate(class_names)}
    user_map = dict(user_map or {})
    folders = [folder_of(p, input_root) for p in paths]
    folder_classes: dict[str, str | None] = {}
    for folder in Counter(folders):
        cls = user_map.get(user_key(folder))
        if cls is None and use_defaults:
            cls = default_class_for(folder)
        folder_classes[folder] = cls if cls in index else None
    truth = np.array([index.get(folder_classes[f] or "", -1) for f in folders], dtype=np.int64)
    return LabelAssignment(truth=truth, folders=folders, folder_classes=folder_classes)


LABELS_HEADER_WORDS = frozenset({"class", "label", "labels", "truth", "diagnosis", "category"})
"""A first row whose class cell is one of these words is a header, not a label."""


@dataclass(frozen=True)
class LabelEntry:
    """One row of a labels file: ``name`` as written (a path or a file name, POSIX separators), its class."""

    line: int
    name: str
    cls: str


def class_for_label(text: str, class_names: Sequence[str]) -> str | None:
    """A class cell -> class name, accepted as folder names are (``default_class_for``: "Early Pre-B",
    "hematogones", "[Malignant] Pro-B", ...) or a class name in any case; None when unknown."""
    canonical = {name.casefold(): name for name in class_names}
    name = canonical.get(text.strip().casefold()) or default_class_for(text)
    return name if name in class_names else None


def read_labels_file(path: Path, class_names: Sequence[str]) -> list[LabelEntry]:
    """Rows ``path or file name, class`` of a CSV file (comma, semicolon or tab; UTF-8, an Excel BOM allowed;
    an optional header row whose second cell is e.g. "class"; blank lines skipped).

    Raises:
        UserInputError: the file cannot be read, a row has not two cells, or a class is unknown (one line,
        with the file's line number).
    """
    import csv

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise UserInputError(f"--labels {path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"--labels {path}: cannot read it as UTF-8 text ({exc})") from exc
    try:
        dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    entries: list[LabelEntry] = []
    for number, row in enumerate(csv.reader(text.splitlines(), dialect), start=1):
        cells = [cell.strip() for cell in row]
        while cells and not cells[-1]:
            cells.pop()
        if not cells:
            continue
        if len(cells) != 2 or not cells[0]:
            raise UserInputError(f"--labels {path} line {number}: expected two cells 'path or file name, class', got {row!r}")
        cls = class_for_label(cells[1], class_names)
        if cls is None:
            if not entries and cells[1].casefold() in LABELS_HEADER_WORDS:
                continue
            raise UserInputError(f"--labels {path} line {number}: unknown class {cells[1]!r}; classes are {', '.join(class_names)}")
        entries.append(LabelEntry(number, cells[0].replace("\\", "/").removeprefix("./"), cls))
    if not entries:
        raise UserInputError(f"--labels {path}: no label rows")
    return entries


def match_labels(
    entries: Sequence[LabelEntry], paths: Sequence[str], class_names: Sequence[str], where: str = "--labels"
) -> npt.NDArray[np.int64]:
    """(n,) class index per path of ``paths`` (relative to the input root, POSIX), -1 when no entry names it.

    An entry names the images whose relative path equals it or ends with "/" + it, so a file name, a path from
    the input root and a path from any folder inside it all work. Every entry must name exactly one image,
    and an image may be named twice only with the same class.

    Raises:
        UserInputError: an entry that names no image, names several (ambiguous), or contradicts another (one line).
    """
    by_name: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        by_name.setdefault(PurePosixPath(p).name, []).append(i)
    index = {name: i for i, name in enumerate(class_names)}
    truth = np.full(len(paths), -1, dtype=np.int64)
    named_by: dict[int, LabelEntry] = {}
    for entry in entries:
        name = entry.name.rstrip("/")
        found = [i for i in by_name.get(PurePosixPath(name).name, []) if paths[i] == name or paths[i].endswith("/" + name)]
        if not found:
            raise UserInputError(f"{where} line {entry.line}: {entry.name!r} matches no image in the results")
        if len(found) > 1:
            shown = ", ".join(repr(paths[i]) for i in found[:3])
            raise UserInputError(
                f"{where} line {entry.line}: {entry.name!r} is ambiguous, it matches {len(found)} images ({shown}"
                f"{', ...' if len(found) > 3 else ''}); give more of the path"
            )
        row = found[0]
        earlier = named_by.get(row)
        if earlier is not None and earlier.cls != entry.cls:
            raise UserInputError(
                f"{where} line {entry.line}: {paths[row]!r} is labelled {entry.cls} here and {earlier.cls} on line {earlier.line}"
            )
        named_by[row] = entry
        truth[row] = index[entry.cls]
    return truth
