"""Shards of the discovered list and ``allbatch merge``: parts merged equal a single run row by row, and
every way parts can fail to add up is refused with a message naming the parts and rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest
from cli_support import allbatch, cpu_run_args
from image_factory import write_bad_files, write_good_images
from rows_support import assert_same_rows

from allbatch.core.errors import UserInputError
from allbatch.input.discover import DiscoveredFile
from allbatch.input.shard import Shard, parse_shard, select
from allbatch.results.merge import MergeError, merge_parts
from allbatch.results.schema import N_COMMITTED

BATCH = 8
N_SHARDS = 3


@pytest.mark.parametrize("count", [1, 2, 3, 7])
@pytest.mark.parametrize("total", [0, 1, 2, 5, 16, 49])
def test_shards_tile_the_list_without_padding_or_overlap(total: int, count: int) -> None:
    files = [DiscoveredFile(Path(f"/x/{i}.jpg"), f"{i}.jpg") for i in range(total)]
    pieces = [select(files, Shard(k, count)) for k in range(count)]
    assert [f for part, _ in pieces for f in part] == files
    sizes = [len(part) for part, _ in pieces]
    assert max(sizes) - min(sizes) <= 1
    assert [(r.start, r.stop) for _, r in pieces] == [Shard(k, count).bounds(total) for k in range(count)]
    assert len({r.sha256 for _, r in pieces}) == 1 and all(r.total == total for _, r in pieces)


@pytest.mark.parametrize("text", ["3/3", "-1/2", "1/0", "a/b", "1", ""])
def test_bad_shard_spec_is_a_user_error(text: str) -> None:
    with pytest.raises(UserInputError, match=r"K/N|0 <= K < N"):
        parse_shard(text)


@pytest.fixture(scope="module")
def slides(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """48 files (15 bad or odd, 33 good): shards of 16 = two batches of 8 each, so each image meets the
    same batch neighbours as in the single run and probabilities can be compared bit for bit."""
    root = tmp_path_factory.mktemp("slides")
    write_bad_files(root)
    write_good_images(root / "good", 33)
    return root


@pytest.fixture(scope="module")
def single_and_parts(slides: Path, tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("runs")
    single = out / "single.h5"
    allbatch(*cpu_run_args(slides, single, tiny_model, "--batch-size", str(BATCH), "--quiet"), check_code=3)
    parts = []
    for k in range(N_SHARDS):
        part = out / f"part{k}.h5"
        result = allbatch(*cpu_run_args(slides, part, tiny_model, "--batch-size", str(BATCH), "--shard", f"{k}/{N_SHARDS}", "--quiet"))
        assert result.returncode in (0, 3), result.stderr[-2000:]
        parts.append(part)
    return single, parts


def test_merged_parts_equal_a_single_run_row_by_row(single_and_parts: tuple[Path, list[Path]], tmp_path: Path) -> None:
    single, parts = single_and_parts
    with h5py.File(single, "r") as f:
        assert int(f[N_COMMITTED][0]) == 48
    for k, part in enumerate(parts):
        with h5py.File(part, "r") as f:
            discovery = json.loads(f.attrs["discovery"])
            assert discovery["shard"] == f"{k}/{N_SHARDS}" and discovery["total"] == 48
            assert (discovery["start"], discovery["stop"]) == (16 * k, 16 * (k + 1))
            assert int(f[N_COMMITTED][0]) == 16
    merged = tmp_path / "merged.h5"
    result = allbatch("merge", *[str(p) for p in reversed(parts)], "--out", str(merged), "--json", check_code=0)
    assert json.loads(result.stdout)["rows"] == 48
    assert_same_rows(merged, single)
    with h5py.File(merged, "r") as m, h5py.File(single, "r") as s:
        for name in ("images/path", "pred/probs", "images/index"):
            assert (m[name].dtype, m[name].chunks, m[name].compression, m[name].maxshape) == (
                s[name].dtype,
                s[name].chunks,
                s[name].compression,
                s[name].maxshape,
            )
        assert list(m[name].attrs) == list(s[name].attrs)
        assert json.loads(m.attrs["compat"]) == json.loads(s.attrs["compat"])  # so the merged file resumes as a whole run
        assert json.loads(m.attrs["discovery"]) == json.loads(s.attrs["discovery"])
        sources = json.loads(m.attrs["merged_from"])
        assert [p["shard"] for p in sources] == ["0/3", "1/3", "2/3"] and [p["rows"] for p in sources] == [16, 16, 16]


def test_merged_file_resumes_as_a_whole_run(
    single_and_parts: tuple[Path, list[Path]], slides: Path, tiny_model: Path, tmp_path: Path
) -> None:
    merged = tmp_path / "merged.h5"
    merge_parts(single_and_parts[1], merged)
    result = allbatch(*cpu_run_args(slides, merged, tiny_model, "--resume", "--quiet", "--json"), check_code=3)
    summary = json.loads(result.stdout)
    assert summary["processed"] == 1 and summary["skipped"] == 47  # only the unreadable (dangling) file is retried


def test_merge_refuses_parts_that_do_not_add_up(single_and_parts: tuple[Path, list[Path]], tmp_path: Path) -> None:
    single, parts = single_and_parts
    out = tmp_path / "merged.h5"
    with pytest.raises(MergeError, match=r"missing parts for shards 2/3 \(rows 32\.\.47\)"):
        merge_parts(parts[:2], out)
    twice = tmp_path / "again0.h5"
    shutil.copy(parts[0], twice)
    with pytest.raises(MergeError, match="shards given more than once: 0/3"):
        merge_parts([*parts, twice], out)
    with pytest.raises(MergeError, match="written without --shard"):
        merge_parts([*parts, single], out)
    killed = tmp_path / "killed1.h5"  # a part whose run died after 13 of its 16 rows were committed
    shutil.copy(parts[1], killed)
    with h5py.File(killed, "r+") as f:
        f[N_COMMITTED][0] = 13
    with pytest.raises(
        MergeError, match=r"killed1\.h5 \(shard 1/3, rows 16\.\.31\) is incomplete: 3 of 16 rows missing \(index 29, 30, 31\)"
    ):
        merge_parts([parts[0], killed, parts[2]], out)
    tampered = tmp_path / "tampered1.h5"  # rows keyed outside the part's range, and twice
    shutil.copy(parts[1], tampered)
    with h5py.File(tampered, "r+") as f:
        f["images/index"][0] = 40
        f["images/index"][2] = 17
        path0 = f["images/path"].asstr()[0]
    with pytest.raises(MergeError) as refused:
        merge_parts([parts[0], tampered, parts[2]], out)
    message = str(refused.value)
    assert f"has rows outside its range: index 40 ({path0})" in message
    assert "indices with more than one live row: 17" in message
    assert "2 of 16 rows missing (index 16, 18)" in message
    assert not out.exists()


def test_merge_refuses_parts_of_different_lists(slides: Path, tiny_model: Path, tmp_path: Path) -> None:
    grown = tmp_path / "grown"
    shutil.copytree(slides, grown, symlinks=True)
    write_good_images(grown / "late", 1)
    common = ("--batch-size", str(BATCH), "--quiet")
    allbatch(*cpu_run_args(slides, tmp_path / "a0.h5", tiny_model, *common, "--shard", "0/2"))
    allbatch(*cpu_run_args(grown, tmp_path / "a1.h5", tiny_model, *common, "--shard", "1/2"))
    result = allbatch("merge", str(tmp_path / "a0.h5"), str(tmp_path / "a1.h5"), "--out", str(tmp_path / "m.h5"), check_code=1)
    assert "different discovered lists (48 files" in result.stderr and "49 files" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "m.h5").exists()
    # a part resumes only as the same shard of the same list
    again = allbatch(*cpu_run_args(slides, tmp_path / "a0.h5", tiny_model, *common, "--shard", "1/2", "--resume"), check_code=1)
    assert "different shard" in again.stderr
