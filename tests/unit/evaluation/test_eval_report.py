"""evaluate_table on an in-memory ResultsTable, and the report: rich tables, JSON without NaN, PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from allbatch import CLASS_NAMES
from allbatch.core.errors import ResultsFileError, UserInputError
from allbatch.core.status import ImageStatus
from allbatch.evaluation import EvalConfig, evaluate_table
from allbatch.evaluation.report import MAX_LISTED, render_report, save_confusion_png, to_json
from allbatch.results.reader import ResultsTable


def make_table(paths: list[str], probs: list[list[float]], status: list[int] | None = None, input_root: str | None = None) -> ResultsTable:
    p = np.array(probs, dtype=np.float32)
    st = np.array(status if status is not None else [0] * len(paths), dtype=np.int8)
    failed = st != ImageStatus.OK
    return ResultsTable(
        rows=np.arange(len(paths), dtype=np.int64),
        paths=np.array(paths, dtype=object),
        sha256=np.array(["0" * 64] * len(paths)),
        status=st,
        errors=np.array(["broken" if f else "" for f in failed], dtype=object),
        probs=p,
        labels=np.where(failed, -1, np.nan_to_num(p).argmax(axis=1)).astype(np.int8),
        mask_fraction=np.full(len(paths), 0.1, dtype=np.float32),
        attrs={"input_root": input_root} if input_root else {},
        class_names=list(CLASS_NAMES),
    )


B, E, PRE = [0.8, 0.1, 0.05, 0.05], [0.1, 0.8, 0.05, 0.05], [0.1, 0.1, 0.7, 0.1]
NAN4 = [float("nan")] * 4


def test_no_pro_images_gives_null_in_json_and_the_png_still_renders(tmp_path: Path) -> None:
    table = make_table(["Benign/a.jpg", "Early/b.jpg", "Pre/c.jpg", "Pre/d.jpg"], [B, E, PRE, E])
    result = evaluate_table(table, EvalConfig(), "t.h5")
    data = to_json(result)
    text = json.dumps(data, allow_nan=False)  # raises if any NaN slipped through
    assert data["per_class"]["Pro"]["sensitivity"] is None and data["per_class"]["Pro"]["precision"] is None
    assert data["per_class"]["Pro"]["specificity"] == 1.0
    assert any("Pro: no images" in note for note in data["notes"])
    assert '"accuracy": 0.75' in text
    png = save_confusion_png(result, tmp_path / "cm.png")
    with Image.open(png) as image:
        assert image.format == "PNG"


def test_every_row_is_evaluated_failed_or_unlabelled() -> None:
    paths = ["Benign/a.jpg", "Benign/bad.jpg", "Odd/x.jpg", "Odd/y.jpg", "Early/b.jpg", "Weird/bad.jpg"]
    probs = [B, NAN4, E, E, E, NAN4]
    status = [0, ImageStatus.DECODE_ERROR, 0, 0, 0, ImageStatus.EMPTY]
    result = evaluate_table(make_table(paths, probs, status), EvalConfig(), "t.h5")
    assert result.evaluated == ["Benign/a.jpg", "Early/b.jpg"]
    assert [(f.path, f.status) for f in result.failed] == [("Benign/bad.jpg", "decode_error"), ("Weird/bad.jpg", "empty")]
    assert result.unlabelled == ["Odd/x.jpg", "Odd/y.jpg"] and result.unlabelled_folders == {"Odd": 2}
    assert result.n_rows == 6 == len(result.evaluated) + len(result.failed) + len(result.unlabelled)
    assert result.multiclass.n == 2


def test_images_in_the_input_root_are_labelled_by_the_root_folder() -> None:
    table = make_table(["a.jpg", "b.jpg"], [B, E], input_root="/data/all-kaggle/Original/Benign")
    result = evaluate_table(table, EvalConfig())
    assert result.multiclass.confusion[0].tolist() == [1, 1, 0, 0]


def test_render_report_lists_failed_and_unlabelled_with_a_limit() -> None:
    n_odd = MAX_LISTED + 5
    paths = ["Benign/a.jpg", "Pre/bad.jpg"] + [f"Odd/{i}.jpg" for i in range(n_odd)]
    table = make_table(paths, [B, NAN4] + [E] * n_odd, [0, ImageStatus.UNREADABLE] + [0] * n_odd)
    console = Console(record=True, width=140)
    console.print(render_report(evaluate_table(table, EvalConfig(), "t.h5")))
    text = console.export_text()
    assert "1 image failed" in text and "unreadable  Pre/bad.jpg  broken" in text
    assert f"{n_odd} images in folders that name no class" in text and "'Odd' (15)" in text
    assert "... and 5 more" in text
    assert "macro average" in text and "screening ALL vs Benign" in text and "n/a" in text


def test_an_ok_row_without_a_prediction_is_a_damaged_file() -> None:
    table = make_table(["Benign/a.jpg"], [B])
    table.labels[0] = -1
    with pytest.raises(ResultsFileError, match="no valid prediction"):
        evaluate_table(table, EvalConfig(), "t.h5")


def test_nothing_labelled_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match=r"no image in t\.h5 could be labelled"):
        evaluate_table(make_table(["Odd/a.jpg"], [B]), EvalConfig(), "t.h5")
