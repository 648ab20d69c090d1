"""Per-folder verdicts: a folder is a slide or a patient; its usable images vote. The first question is
"ALL or not", answered from the model's measured Benign -> ALL error rate; the subtype comes second.

Rule (docs/verdicts.md; the parameters are ``VerdictRule``):
  usable images = status ok and no quality flag; ALL votes = usable images predicted Early, Pre or Pro;
  fewer than ``min_usable`` usable images                          -> "insufficient";
  the model carries no measured Benign error rate                  -> "no error rate" (never guessed);
  tail = P(X >= ALL votes) for X ~ Binomial(usable, p), p the Clopper-Pearson ``confidence`` upper bound
  of the Benign -> ALL error rate measured on the model's test (else validation) part;
  tail < ``alpha`` (a Benign folder would rarely give that many ALL votes):
      one subtype holds >= ``subtype_share`` of the ALL votes        -> "ALL (<subtype>)", e.g. "ALL (Early Pre-B)";
      otherwise                                                      -> "ALL, subtype mixed";
  else (the ALL votes fit the model's error rate on Benign images)   -> "Benign".
The upper bound (not the measured rate) keeps a rate of 0 errors seen from making a single ALL vote
decisive. Mean probabilities and vote shares are over the usable images only, so a blurred or foreign
image does not move a folder's verdict.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch.core.errors import UserInputError
from allbatch.core.status import FAILED_STATUSES, ImageStatus
from allbatch.model.manifest import BENIGN_CLASS, BenignErrors, benign_errors_of
from allbatch.qc.flags import not_a_smear_mask
from allbatch.results.reader import ResultsTable

INSUFFICIENT = "insufficient"
NO_RATE = "no error rate"
"""The verdict of every folder with enough usable images when the model carries no measured Benign error rate."""
ALL_MIXED = "ALL, subtype mixed"
SUBTYPE_NAMES = {"Early": "Early Pre-B", "Pre": "Pre-B", "Pro": "Pro-B"}
"""How a verdict names an ALL class (the class names are short: allbatch.CLASS_NAMES)."""


def all_verdict(class_name: str) -> str:
    """The verdict naming one ALL subtype: ``"Early"`` -> ``"ALL (Early Pre-B)"``."""
    return f"ALL ({SUBTYPE_NAMES.get(class_name, class_name)})"


def clopper_pearson_upper(errors: int, trials: int, confidence: float) -> float:
    """One-sided upper confidence bound of a binomial rate: the p with P(X <= errors | trials, p) = 1 - confidence
    (the Beta(errors + 1, trials - errors) quantile; 1.0 when every trial was an error)."""
    from scipy.stats import beta

    if errors >= trials:
        return 1.0
    return float(beta.ppf(confidence, errors + 1, trials - errors))


def benign_tail(all_votes: int, usable: int, rate: float) -> float:
    """P(X >= all_votes) for X ~ Binomial(usable, rate): how often a Benign folder of ``usable`` images
    would give at least ``all_votes`` ALL votes at the error rate ``rate`` (1.0 for no ALL vote)."""
    from scipy.stats import binom

    if all_votes <= 0:
        return 1.0
    return float(binom.sf(all_votes - 1, usable, rate))


@dataclass(frozen=True)
class VerdictRule:
    """``benign_errors``: the model's measured Benign -> ALL errors (None: not measured, no folder is called);
    ``min_usable``: usable images a folder needs; ``alpha``: the Benign tail probability below which a folder is
    ALL; ``confidence``: of the one-sided Clopper-Pearson upper bound used as the error rate; ``subtype_share``:
    share of the ALL votes one subtype needs to name the verdict."""

    benign_errors: BenignErrors | None = None
    min_usable: int = 5
    alpha: float = 0.01
    confidence: float = 0.90
    subtype_share: float = 0.7

    def __post_init__(self) -> None:
        if self.min_usable < 1 or not 0.0 < self.subtype_share <= 1.0:
            raise UserInputError(
                f"verdict rule needs min_usable >= 1 and 0 < subtype_share <= 1, got {self.min_usable}, {self.subtype_share}"
            )
        if not 0.0 < self.alpha < 1.0 or not 0.0 < self.confidence < 1.0:
            raise UserInputError(f"verdict rule needs 0 < alpha < 1 and 0 < confidence < 1, got {self.alpha}, {self.confidence}")

    @cached_property
    def error_rate(self) -> float:
        """The Benign -> ALL rate the tail is computed with: the upper bound of the measured one (NaN when unmeasured)."""
        if self.benign_errors is None:
            return math.nan
        return clopper_pearson_upper(self.benign_errors.errors, self.benign_errors.images, self.confidence)

    def describe_rates(self) -> str:
        """The rates in words, e.g. "Benign -> ALL 2 of 75 (2.7 %, validation.onnx_runtime.plain), 90 % upper bound 6.9 %"."""
        e = self.benign_errors
        if e is None:
            return "the model carries no measured Benign -> ALL error rate"
        return (
            f"Benign images called ALL: {e.errors} of {e.images} ({100 * e.rate:.1f} %, model manifest {e.source}); "
            f"one-sided Clopper-Pearson {100 * self.confidence:.0f} % upper bound {100 * self.error_rate:.1f} %"
        )

    def describe(self) -> str:
        return (
            f"usable = ok and unflagged; fewer than {self.min_usable} usable -> {INSUFFICIENT}; "
            f"ALL when P(at least this many ALL votes | a Benign folder) < {self.alpha:g} at the error rate's upper bound, "
            f"named by the subtype holding >= {100 * self.subtype_share:.0f} % of the ALL votes, else '{ALL_MIXED}'; "
            f"otherwise {BENIGN_CLASS}. Rates: {self.describe_rates()}"
            + (f"; without a rate no folder is called ({NO_RATE})" if self.benign_errors is None else "")
        )


@dataclass
class GroupSummary:
    """One folder: counts, and per class (in ``class_names`` order) mean probability and votes of its usable images.

    ``not_a_smear``: ok images whose flags say they are not a usable smear (``qc.flags.NOT_A_SMEAR``; part of
    ``flagged``). ``benign_tail``: P(at least this folder's ALL votes | Benign) at the rule's error rate (NaN when
    no rate or too few usable images)."""

    name: str
    images: int
    ok: int
    failed: int
    flagged: int
    usable: int
    mean_probs: list[float]
    votes: list[int]
    verdict: str
    not_a_smear: int = 0
    benign_tail: float = math.nan

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

    def verdict_names(self) -> list[str]:
        """Every verdict this table can hold, Benign and the ALL verdicts first."""
        subtypes = [all_verdict(name) for name in self.class_names if name != BENIGN_CLASS]
        return [BENIGN_CLASS, *subtypes, ALL_MIXED, INSUFFICIENT, NO_RATE]

    def verdict_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.verdict_names(), 0)
        for group in self.groups:
            counts[group.verdict] = counts.get(group.verdict, 0) + 1
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


def verdict_for(votes: npt.NDArray[np.int64], usable: int, rule: VerdictRule, class_names: list[str]) -> tuple[str, float]:
    """The rule in the module docstring for one folder's (C,) usable votes: (verdict, Benign tail probability)."""
    if usable < rule.min_usable:
        return INSUFFICIENT, math.nan
    if rule.benign_errors is None:
        return NO_RATE, math.nan
    benign = class_names.index(BENIGN_CLASS)
    all_classes = [j for j in range(len(class_names)) if j != benign]
    all_votes = int(sum(int(votes[j]) for j in all_classes))
    tail = benign_tail(all_votes, usable, rule.error_rate)
    if tail >= rule.alpha:
        return BENIGN_CLASS, tail
    lead = max(all_classes, key=lambda j: int(votes[j]))
    if votes[lead] / all_votes >= rule.subtype_share:
        return all_verdict(class_names[lead]), tail
    return ALL_MIXED, tail


def rule_from_attrs(attrs: dict[str, Any]) -> VerdictRule:
    """The default rule with the error rates of the model that made a results file (its ``model_manifest``
    attribute); no rate when the file records no manifest or the manifest no measurement."""
    manifest = attrs.get("model_manifest")
    if isinstance(manifest, str):
        try:
            manifest = json.loads(manifest)
        except ValueError:
            manifest = None
    validation = manifest.get("validation") if isinstance(manifest, dict) else None
    return VerdictRule(benign_errors=benign_errors_of(validation) if isinstance(validation, dict) else None)


def summarize_groups(table: ResultsTable, group_by: str = "parent", rule: VerdictRule | None = None) -> GroupTable:
    """Per-folder summary of the live rows of ``table`` (superseded rows are never counted); ``rule`` defaults to
    ``rule_from_attrs(table.attrs)``."""
    from allbatch.input.discover import natural_key

    rule = rule or rule_from_attrs(table.attrs)
    group_by = parse_group_by(group_by)
    class_names = table.class_names
    k = len(class_names)
    names = np.array([group_of(str(p), group_by) for p in table.paths], dtype=object)
    ok = table.status == ImageStatus.OK
    failed = np.isin(table.status, [int(s) for s in FAILED_STATUSES])
    flagged = ok & (table.flags != 0)
    junk = ok & not_a_smear_mask(table.flags)
    usable = ok & ~flagged
    out = GroupTable(group_by, rule, list(class_names))
    unique, inverse = np.unique(names.astype(str), return_inverse=True) if len(names) else (np.array([], dtype=str), np.zeros(0, int))
    g = len(unique)

    def per_group(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.int64]:
        return np.bincount(inverse[mask], minlength=g).astype(np.int64)

    images, n_ok, n_failed, n_flagged, n_usable, n_junk = (
        per_group(m) for m in (np.ones(len(names), bool), ok, failed, flagged, usable, junk)
    )
    labels = table.labels.astype(np.int64)
    votes = np.zeros((g, k), dtype=np.int64)
    np.add.at(votes, (inverse[usable], labels[usable]), 1)
    sums = np.zeros((g, k), dtype=np.float64)
    np.add.at(sums, inverse[usable], table.probs[usable].astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / n_usable[:, None]
    for index in sorted(range(g), key=lambda i: natural_key(str(unique[i]))):
        verdict, tail = verdict_for(votes[index], int(n_usable[index]), rule, list(class_names))
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
                verdict=verdict,
                not_a_smear=int(n_junk[index]),
                benign_tail=tail,
            )
        )
    return out


def groups_as_rows(groups: GroupTable) -> tuple[list[str], list[list[Any]]]:
    """(header, rows) of the per-folder table, as the CSV export shows it; the last column repeats the rule
    (with its rates) so that a spreadsheet row says how its verdict was reached."""
    c = groups.class_names
    header = [
        "folder",
        "images",
        "ok",
        "failed",
        "flagged",
        "not_a_smear",
        "usable",
        *[f"mean_p_{name}" for name in c],
        *[f"votes_{name}" for name in c],
        *[f"share_{name}" for name in c],
        "benign_tail_p",
        "verdict",
        "rule",
    ]
    rule = groups.rule.describe()
    rows = [
        [
            g.name,
            g.images,
            g.ok,
            g.failed,
            g.flagged,
            g.not_a_smear,
            g.usable,
            *g.mean_probs,
            *g.votes,
            *g.vote_shares,
            g.benign_tail,
            g.verdict,
            rule,
        ]
        for g in groups.groups
    ]
    return header, rows
