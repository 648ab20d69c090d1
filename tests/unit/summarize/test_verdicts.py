"""Folder verdicts answer "ALL or not" first, from the model's measured Benign -> ALL error rate (issue 23, point 1)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from rich.console import Console
from scipy.stats import beta, binom

from allbatch import CLASS_NAMES
from allbatch.core.errors import ModelError
from allbatch.core.status import ImageStatus
from allbatch.model.manifest import DEFAULT_MODEL, BenignErrors, benign_errors_of, manifest_path_for
from allbatch.qc.flags import QcFlag
from allbatch.results.reader import ResultsTable, read_results
from allbatch.results.rows import ResultRows
from allbatch.results.writer import ResultsWriter
from allbatch.summarize.groups import (
    ALL_MIXED,
    INSUFFICIENT,
    NO_RATE,
    VerdictRule,
    clopper_pearson_upper,
    rule_from_attrs,
    summarize_groups,
    verdict_for,
)
from allbatch.summarize.groups_csv import export_groups_csv
from allbatch.summarize.groups_h5 import read_groups, write_groups
from allbatch.summarize.render import groups_table

VALIDATION = {"onnx_runtime": {"plain": {"confusion": [[73, 2, 0, 0], [0, 148, 0, 0], [0, 0, 149, 0], [0, 0, 0, 124]]}}}
"""The shipped model's validation part as its manifest holds it: 2 of 75 Benign images called Early."""
RULE = VerdictRule(benign_errors=BenignErrors(2, 75, "validation.onnx_runtime.plain"))


def votes(benign: int = 0, early: int = 0, pre: int = 0, pro: int = 0) -> np.ndarray:
    return np.array([benign, early, pre, pro], dtype=np.int64)


def shipped_rule() -> VerdictRule:
    """The rule with the rates of the model that ships (read from its manifest, whatever part measured it)."""
    manifest = json.loads(manifest_path_for(DEFAULT_MODEL).read_text(encoding="utf-8"))
    return rule_from_attrs({"model_manifest": json.dumps(manifest)})


@pytest.mark.parametrize("rule", [RULE, shipped_rule()], ids=["validation 2 of 75", "shipped manifest"])
def test_the_issue_folder_of_21_benign_and_7_early_images_is_all(rule: VerdictRule) -> None:
    # 28 images, 3 of them flagged; 25 usable votes of which 6 Early (each one correct): the issue's folder.
    verdict, tail = verdict_for(votes(benign=19, early=6), 25, rule, list(CLASS_NAMES))
    assert verdict == "ALL (Early Pre-B)"
    assert tail < 0.01


def test_the_tail_is_the_binomial_tail_at_the_upper_bound_of_the_measured_rate() -> None:
    upper = beta.ppf(0.90, 3, 73)  # one-sided 90 % Clopper-Pearson bound of 2/75, computed here independently
    assert RULE.error_rate == pytest.approx(upper) and 0.06 < upper < 0.07
    _, tail = verdict_for(votes(benign=19, early=6), 25, RULE, list(CLASS_NAMES))
    assert tail == pytest.approx(binom.sf(5, 25, upper))


@pytest.mark.parametrize(
    ("folder", "expected"),
    [
        (votes(benign=24, early=1), "Benign"),  # one ALL vote in 25 fits a 2.7 % error rate
        (votes(benign=22, early=3), "Benign"),  # three: still within what Benign folders give at the upper bound
        (votes(benign=10, early=10), "ALL (Early Pre-B)"),  # the issue's "half Benign, half Early" (was "discordant")
        (votes(early=10, pre=10), ALL_MIXED),  # all ALL, two subtypes (was "discordant")
        (votes(pre=3, pro=12), "ALL (Pro-B)"),  # 80 % of the ALL votes Pro
        (votes(benign=5, pre=14, pro=6), "ALL (Pre-B)"),  # 70 % of the ALL votes is enough to name the subtype
        (votes(benign=5, pre=13, pro=7), ALL_MIXED),  # 65 % is not
        (votes(benign=3, early=1), INSUFFICIENT),
    ],
)
def test_verdicts(folder: np.ndarray, expected: str) -> None:
    assert verdict_for(folder, int(folder.sum()), RULE, list(CLASS_NAMES))[0] == expected


def test_zero_errors_measured_do_not_make_one_all_vote_decisive() -> None:
    rule = VerdictRule(benign_errors=BenignErrors(0, 75, "validation.test_part"))
    assert rule.error_rate == pytest.approx(1 - 0.1 ** (1 / 75))  # the bound of 0 of 75 at 90 %: 3.0 %
    assert verdict_for(votes(benign=24, early=1), 25, rule, list(CLASS_NAMES))[0] == "Benign"
    assert verdict_for(votes(benign=21, early=4), 25, rule, list(CLASS_NAMES))[0] == "ALL (Early Pre-B)"


def test_a_model_without_a_measured_rate_calls_no_folder() -> None:
    rule = rule_from_attrs({})  # a results file that records no model manifest
    assert rule.benign_errors is None and math.isnan(rule.error_rate)
    assert verdict_for(votes(early=25), 25, rule, list(CLASS_NAMES)) == (NO_RATE, pytest.approx(math.nan, nan_ok=True))
    assert "no measured Benign -> ALL error rate" in rule.describe()


def test_the_rates_come_from_the_test_part_when_the_manifest_has_one() -> None:
    assert benign_errors_of(VALIDATION) == BenignErrors(2, 75, "validation.onnx_runtime.plain")
    with_test = {**VALIDATION, "test_part": {"confusion": [[120, 0, 1, 0], [3, 200, 0, 0], [0, 0, 210, 0], [0, 0, 0, 180]]}}
    assert benign_errors_of(with_test) == BenignErrors(1, 121, "validation.test_part")
    assert benign_errors_of({}) is None
    with pytest.raises(ModelError, match="4x4 matrix"):
        benign_errors_of({"test_part": {"confusion": [[1, 2], [3, 4]]}})
    with pytest.raises(ModelError, match="no Benign image"):
        benign_errors_of({"test_part": {"confusion": [[0] * 4] * 4}})


def test_clopper_pearson_bounds() -> None:
    assert clopper_pearson_upper(75, 75, 0.9) == 1.0
    assert clopper_pearson_upper(0, 30, 0.95) == pytest.approx(1 - 0.05 ** (1 / 30))  # the exact form of "rule of three"


# ----- stored, exported and shown ----------------------------------------------------------------


def _rows(specs: list[tuple[str, int, int]]) -> ResultRows:
    """(path, predicted class, flags) -> ok rows with a confident probability for the class."""
    n = len(specs)
    probs = np.full((n, 4), 0.02, dtype=np.float32)
    for i, (_, label, _) in enumerate(specs):
        probs[i, label] = 0.94
    return ResultRows(
        paths=[s[0] for s in specs],
        sha256=[hashlib.sha256(s[0].encode()).hexdigest() for s in specs],
        status=np.full(n, int(ImageStatus.OK), dtype=np.int8),
        errors=[""] * n,
        probs=probs,
        labels=np.array([s[1] for s in specs], dtype=np.int8),
        mask_fraction=np.full(n, 0.05, dtype=np.float32),
        qc={"flags": np.array([s[2] for s in specs], dtype=np.uint16)},
    )


@pytest.fixture
def issue_archive(tmp_path: Path) -> Path:
    """The issue's patient: 21 Benign and 7 Early images (one Early and one Benign flagged, one Benign a grey
    picture flagged as not a smear), so 25 usable votes, 6 of them Early; and a patient with 20 Benign votes."""
    specs = [(f"P01/b{i:02d}.jpg", 0, 0) for i in range(19)]
    specs += [("P01/b19.jpg", 0, int(QcFlag.UNCERTAIN)), ("P01/grey.jpg", 1, int(QcFlag.BLURRED | QcFlag.COLOUR | QcFlag.OUTLIER))]
    specs += [(f"P01/e{i}.jpg", 1, 0) for i in range(6)] + [("P01/e6.jpg", 1, int(QcFlag.OUTLIER))]
    specs += [(f"P02/b{i:02d}.jpg", 0, 0) for i in range(20)]
    out = tmp_path / "r.h5"
    provenance = {"input_root": str(tmp_path), "model_manifest": json.dumps({"name": "x", "validation": VALIDATION})}
    with ResultsWriter.open(out, mode="new", provenance=provenance, compat={}) as writer:
        writer.append(_rows(specs))
    return out


def test_the_verdicts_their_rates_and_tails_reach_the_file_the_csv_and_the_terminal(issue_archive: Path, tmp_path: Path) -> None:
    table = summarize_groups(read_results(issue_archive))
    p01, p02 = table.groups
    assert (p01.images, p01.flagged, p01.not_a_smear, p01.usable, p01.votes) == (28, 3, 1, 25, [19, 6, 0, 0])
    assert (p01.verdict, p02.verdict) == ("ALL (Early Pre-B)", "Benign")
    assert p01.benign_tail < 0.01 <= p02.benign_tail == 1.0

    write_groups(issue_archive, table)
    stored = read_groups(issue_archive)
    assert stored is not None and stored["verdict"] == ["ALL (Early Pre-B)", "Benign"]
    assert stored["not_a_smear"].tolist() == [1, 0]
    np.testing.assert_allclose(stored["benign_tail"], [p01.benign_tail, 1.0])
    attrs = stored["attrs"]
    assert (attrs["benign_errors"], attrs["benign_images"], attrs["rate_source"]) == (2, 75, "validation.onnx_runtime.plain")
    assert attrs["error_rate"] == pytest.approx(RULE.error_rate) and attrs["alpha"] == 0.01
    assert "2 of 75" in attrs["rule"]

    target = tmp_path / "folders.csv"
    export_groups_csv(issue_archive, target)
    with target.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["verdict"] for r in rows] == ["ALL (Early Pre-B)", "Benign"]
    assert float(rows[0]["benign_tail_p"]) == pytest.approx(p01.benign_tail, rel=1e-6) and rows[0]["not_a_smear"] == "1"
    assert "2 of 75" in rows[0]["rule"] and "Clopper-Pearson 90 % upper bound 6.9 %" in rows[0]["rule"]

    console = Console(file=io.StringIO(), width=240, color_system=None)
    console.print(groups_table(table))
    text = console.file.getvalue()
    p01_line = next(line for line in text.splitlines() if "P01" in line)
    assert "ALL (Early Pre-B)" in p01_line and f"{p01.benign_tail:.2g}" in p01_line
    flat = " ".join(text.split())  # the caption wraps at the table width
    assert "verdicts: 1 Benign, 1 ALL (Early Pre-B)." in flat and "2 of 75" in flat


def test_a_groups_table_written_before_the_error_rate_rule_still_reads(tmp_path: Path) -> None:
    out = tmp_path / "old.h5"
    with ResultsWriter.open(out, mode="new", provenance={}, compat={}) as writer:
        writer.append(_rows([("A/x.jpg", 1, 0)]))
    with h5py.File(out, "r+") as f:  # the /groups of an earlier allbatch: five datasets, the majority rule
        group = f.create_group("groups")
        group.attrs["rule"] = "usable = ok and unflagged; ... otherwise discordant"
        string = h5py.string_dtype("utf-8")
        group.create_dataset("name", data=np.array(["A"], dtype=object), dtype=string)
        group.create_dataset("counts", data=np.array([[1, 1, 0, 0, 1]], dtype=np.int64))
        group.create_dataset("mean_probs", data=np.zeros((1, 4), dtype=np.float32))
        group.create_dataset("votes", data=np.array([[0, 1, 0, 0]], dtype=np.int64))
        group.create_dataset("verdict", data=np.array(["discordant"], dtype=object), dtype=string)
    stored = read_groups(out)
    assert stored is not None and stored["verdict"] == ["discordant"] and "benign_tail" not in stored


def test_summarize_needs_no_model(issue_archive: Path) -> None:
    table: ResultsTable = read_results(issue_archive)
    table.attrs.pop("model_manifest")
    assert {g.verdict for g in summarize_groups(table).groups} == {NO_RATE}
