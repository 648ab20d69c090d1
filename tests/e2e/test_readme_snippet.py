"""README's "Load results in Python" snippet runs as written on a real results.h5 (with a superseded
row, a failed image and a stale duplicate that a killed run leaves) and gives one live row per file."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from paths import REPO

from allbatch.core.status import ImageStatus
from allbatch.results.rows import ResultRows
from allbatch.results.writer import ResultsWriter

README = REPO / "README.md"


def snippet() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("### Load results in Python", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return code


def _rows(spec: list[tuple[str, int, int]]) -> ResultRows:
    """(path, status, label) -> rows; probs one-hot-ish on the label, NaN when failed."""
    n = len(spec)
    probs = np.full((n, 4), np.nan, dtype=np.float32)
    for i, (_, status, label) in enumerate(spec):
        if status == ImageStatus.OK:
            probs[i] = 0.1
            probs[i, label] = 0.7
    return ResultRows(
        paths=[p for p, _, _ in spec],
        sha256=[hashlib.sha256(f"{p}{i}".encode()).hexdigest() for i, (p, _, _) in enumerate(spec)],
        status=np.array([s for _, s, _ in spec], dtype=np.int8),
        errors=["" if s == ImageStatus.OK else "cannot identify image file" for _, s, _ in spec],
        probs=probs,
        labels=np.array([label for _, _, label in spec], dtype=np.int8),
        mask_fraction=np.full(n, 0.2, dtype=np.float32),
    )


def test_the_load_snippet_runs_and_keeps_one_live_row_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "results.h5"
    writer = ResultsWriter.open(path, mode="new", provenance={}, compat={}, expected_rows=8)
    writer.append(_rows([("Benign/ü a.jpg", 0, 0), ("Early/b.jpg", 0, 1), ("Pro/bad.jpg", int(ImageStatus.DECODE_ERROR), -1)]))
    writer.supersede([1])  # b.jpg changed ...
    writer.append(_rows([("Early/b.jpg", 0, 2), ("Pre/c.jpg", 0, 2)]))  # ... and was redone
    writer.append(_rows([("Pre/c.jpg", 0, 3)]))  # a stale duplicate, as a killed run leaves: the later row counts
    writer.close(compact=False)

    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(snippet(), "README.md", "exec"), namespace)
    df = namespace["df"]
    assert list(df["path"]) == ["Benign/ü a.jpg", "Pro/bad.jpg", "Early/b.jpg", "Pre/c.jpg"]  # type: ignore[index]
    assert list(df["class"]) == ["Benign", "", "Pre", "Pro"]  # type: ignore[index]
    assert isinstance(df["path"].iloc[0], str) and df["p_Benign"].iloc[0] == pytest.approx(0.7)  # type: ignore[index]
