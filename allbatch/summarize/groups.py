"""Per-folder verdicts: a folder is a slide or a patient; its images vote.

Rule (documented in the README; the parameters are ``VerdictRule``):
  usable images = status ok and no quality flag;
  fewer than ``min_usable`` usable images   -> "insufficient";
  else the class with the most usable votes, when its share of the usable votes is at least
  ``min_share``                              -> that class;
  else                                       -> "discordant" (the votes are split).
Mean probabilities and vote shares are over the usable images only, so a blurred or foreign image
does not move a folder's verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch.core.errors import UserInputError
from allbatch.core.status import FAILED_STATUSES, ImageStatus
from allbatch.results.reader import ResultsTable

INSUFFICIENT = "insufficient"
DISCORDANT = "discordant"


@dataclass(frozen=True)
class VerdictRule:
    """``min_usable``: usable images a folder needs for a verdict; ``min_share``: share of the usable
    votes the leading class needs (ties below it are "discordant")."""

    min_usable: int = 5
    min_share: float = 0.7

    def __post_init__(self) -> None:
        if self.min_usable < 1 or not 0.0 < self.min_share <= 1.0:
            raise UserInputError(f"verdict rule needs min_usable >= 1 and 0 < min_share <= 1, got {self.min_usable}, {self.min_share}")

    def describe(self) -> str:
        return (
            f"usable = ok and unflagged; fewer than {self.min_usable} usable -> {INSUFFICIENT}; "
            f"else the leading class if it has >= {self.min_share:.0%} of the usable votes, otherwise {DISCORDANT}"
        )


@dataclass
class GroupSummary:
    """One folder: counts, and per class (in ``class_names`` order) mean probability and votes of its usable images."""

    name: str
    images: int
    ok: int
    failed: int
    flagged: int
    usable: int
    mean_probs: list[float]
    votes: list[int]
    verdict: str

    @property
    def vote_shares(self) -> list[float]:
        return [v / self.usable if self.usable else math.nan for v in self.votes]


@dataclass
class GroupTable:
    """Every folder of a results file, sorted by natural name order of the folders."""

    group_by: str
    rule: VerdictRule
    class_names: list[str]
    groups: list[GroupSummary] = field(default_factory=list)

    def verdict_counts(self) -> dict[str, int]:
        counts = dict.fromkeys([*self.class_names, INSUFFICIENT, DISCORDANT], 0)
        for group in self.groups:
            counts[group.verdict] += 1
        return counts


def parse_group_by(value: str) -> str:
    """ "parent" or a depth "1", "2", ... (folders counted from the input root); UserInputError otherwise."""
    if value == "parent" or (value.isdigit() and int(value) >= 1):
        return value
    raise UserInputError(f"--group-by must be 'parent' or a depth 1, 2, ..., got {value!r}")


def group_of(relpath: str, group_by: str) -> str:
    """The folder an image belongs to: its parent folder ("." at the root), or its first N folders."""
    folders = relpath.split("/")[:-1]
    if group_by != "parent":
        folders = folders[: int(group_by)]
    return "/".join(folders) or "."


def verdict_for(votes: npt.NDArray[np.int64], usable: int, rule: VerdictRule, class_names: list[str]) -> str:
    """The rule in the module docstring for one folder's (C,) usable votes."""
    if usable < rule.min_usable:
        return INSUFFICIENT
    lead = int(np.argmax(votes))
    return class_names[lead] if votes[lead] / usable >= rule.min_share else DISCORDANT


def summarize_groups(table: ResultsTable, group_by: str = "parent", rule: VerdictRule | None = None) -> GroupTable:
    """Per-folder summary of the live rows of ``table`` (superseded rows are never counted)."""
    from allbatch.input.discover import natural_key

    rule = rule or VerdictRule()
    group_by = parse_group_by(group_by)
    class_names = table.class_names
    k = len(class_names)
    names = np.array([group_of(str(p), group_by) for p in table.paths], dtype=object)
    ok = table.status == ImageStatus.OK
    failed = np.isin(table.status, [int(s) for s in FAILED_STATUSES])
    flagged = ok & (table.flags != 0)
    usable = ok & ~flagged
    out = GroupTable(group_by, rule, list(class_names))
    unique, inverse = np.unique(names.astype(str), return_inverse=True) if len(names) else (np.array([], dtype=str), np.zeros(0, int))
    g = len(unique)

    def per_group(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
        return np.bincount(inverse[mask], minlength=g).astype(np.int64)

    images, n_ok, n_failed, n_flagged, n_usable = (per_group(m) for m in (np.ones(len(names), bool), ok, failed, flagged, usable))
    labels = table.labels.astype(np.int64)
    votes = np.zeros((g, k), dtype=np.int64)
    np.add.at(votes, (inverse[usable], labels[usable]), 1)
    sums = np.zeros((g, k), dtype=np.float64)
    np.add.at(sums, inverse[usable], table.probs[usable].astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / n_usable[:, None]
    for index in sorted(range(g), key=lambda i: natural_key(str(unique[i]))):
        out.groups.append(
            GroupSummary(
                name=str(unique[index]),
                images=int(images[index]),
                ok=int(n_ok[index]),
                failed=int(n_failed[index]),
                flagged=int(n_flagged[index]),
                usable=int(n_usable[index]),
                mean_probs=[float(v) for v in means[index]],
                votes=[int(v) for v in votes[index]],
                verdict=verdict_for(votes[index], int(n_usable[index]), rule, list(class_names)),
            )
        )
    return out


def groups_as_rows(groups: GroupTable) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of the per-folder table, as the CSV export and the report show it."""
    c = groups.class_names
    header = [
        "folder",
        "images",
        "ok",
        "failed",
        "flagged",
        "usable",
        *[f"mean_p_{name}" for name in c],
        *[f"votes_{name}" for name in c],
        *[f"share_{name}" for name in c],
        "verdict",
    ]
    rows = [
        [g.name, g.images, g.ok, g.failed, g.flagged, g.usable, *g.mean_probs, *g.votes, *g.vote_shares, g.verdict] for g in groups.groups
    ]
    return header, rows
