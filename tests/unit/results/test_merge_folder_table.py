"""``allbatch merge`` and the folder table (issue 24, point 5): the merged file's ``/groups`` is the table of the
merged rows (as a single run over the same folder writes it), not the first part's, and parts are accepted
when one of them has as many folders as rows (its ``/groups`` datasets then have the row axis's length)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from cli_support import allbatch, cpu_run_args
from image_factory import write_good_images
from rows_support import assert_same_rows

from allbatch.summarize.groups_h5 import read_groups


def _same_groups(a: Path, b: Path) -> None:
    left, right = read_groups(a), read_groups(b)
    assert left is not None and right is not None
    for key in ("name", "verdict"):
        assert left[key] == right[key], key
    for key in ("counts", "votes"):
        np.testing.assert_array_equal(left[key], right[key])  # type: ignore[arg-type]
    np.testing.assert_allclose(left["mean_probs"], right["mean_probs"], atol=1e-6)  # type: ignore[arg-type]
    assert left["attrs"]["group_by"] == right["attrs"]["group_by"]  # type: ignore[index]


def test_merge_writes_the_folder_table_of_the_merged_rows(tmp_path: Path, tiny_model: Path) -> None:
    """Shard 0/2 holds folders a to d (one image each: 4 folders, 4 rows), shard 1/2 folder e (4 images)."""
    root = tmp_path / "slides"
    for k, folder in enumerate("abcd"):
        write_good_images(root / folder, 1, start=k)
    write_good_images(root / "e", 4, start=4)
    single = tmp_path / "single.h5"
    allbatch(*cpu_run_args(root, single, tiny_model, "--quiet"), check_code=0)
    parts = []
    for k in range(2):
        part = tmp_path / f"part{k}.h5"
        allbatch(*cpu_run_args(root, part, tiny_model, "--shard", f"{k}/2", "--quiet"), check_code=0)
        parts.append(part)
    first = read_groups(parts[0])
    assert first is not None and first["name"] == ["a", "b", "c", "d"]  # as many folders as the part has rows
    merged = tmp_path / "merged.h5"
    result = allbatch("merge", *map(str, parts), "--out", str(merged), check_code=0)
    assert "Traceback" not in result.stderr
    assert_same_rows(merged, single, by_index=True, float_atol=1e-6)
    _same_groups(merged, single)  # folders a to e, counted over all rows


def test_merge_keeps_the_parts_group_by_unless_told(tmp_path: Path, tiny_model: Path) -> None:
    root = tmp_path / "slides"
    for k, folder in enumerate(("p1/s1", "p1/s2", "p2/s1")):
        write_good_images(root / folder, 2, start=2 * k)
    parts = []
    for k in range(2):
        part = tmp_path / f"part{k}.h5"
        allbatch(*cpu_run_args(root, part, tiny_model, "--shard", f"{k}/2", "--group-by", "1", "--quiet"), check_code=0)
        parts.append(part)
    merged = tmp_path / "merged.h5"
    allbatch("merge", *map(str, parts), "--out", str(merged), check_code=0)
    table = read_groups(merged)
    assert table is not None and table["name"] == ["p1", "p2"] and table["attrs"]["group_by"] == "1"  # type: ignore[index]
    allbatch("merge", *map(str, parts), "--out", str(merged), "--overwrite", "--group-by", "parent", check_code=0)
    table = read_groups(merged)
    assert table is not None and table["name"] == ["p1/s1", "p1/s2", "p2/s1"]
