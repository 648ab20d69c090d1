"""resume.plan: skip, redo or new for one discovered file."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from image_factory import encode, smear_like

from allbatch.core.records import EncodedImage, FileStat
from allbatch.core.status import ImageStatus
from allbatch.input.discover import DiscoveredFile
from allbatch.input.read import file_stat
from allbatch.results.resume import plan, unchanged_by_stat
from allbatch.results.writer import CommittedRow

SHA = "a" * 64
COMMITTED = {
    "ok.jpg": CommittedRow(0, SHA, int(ImageStatus.OK)),
    "broken.jpg": CommittedRow(1, SHA, int(ImageStatus.DECODE_ERROR)),
    "gone.jpg": CommittedRow(2, "", int(ImageStatus.UNREADABLE)),
}


def test_same_path_and_hash_is_skipped() -> None:
    assert plan(COMMITTED, "ok.jpg", SHA) == "skip"
    assert plan(COMMITTED, "broken.jpg", SHA) == "skip"  # the same bytes fail the same way


def test_changed_bytes_are_redone() -> None:
    assert plan(COMMITTED, "ok.jpg", "b" * 64) == "redo"
    assert plan(COMMITTED, "broken.jpg", "b" * 64) == "redo"


def test_unreadable_is_always_retried() -> None:
    assert plan(COMMITTED, "gone.jpg", "") == "redo"
    assert plan(COMMITTED, "gone.jpg", SHA) == "redo"


def test_unknown_path_is_new() -> None:
    assert plan(COMMITTED, "new.jpg", SHA) == "new"
    assert plan({}, "ok.jpg", SHA) == "new"
    assert plan(COMMITTED, "OK.jpg", SHA) == "new"  # paths compare exactly


# ----- the cheap check first: size + mtime_ns + ctime_ns, re-hash only when they differ -------------


def _stat_row(stat: FileStat, status: ImageStatus = ImageStatus.OK) -> dict[str, CommittedRow]:
    return {"a.jpg": CommittedRow(0, "a" * 64, int(status), stat.recorded())}


def test_an_unchanged_stat_skips_without_reading() -> None:
    stat = FileStat(100, 1_000, 2_000)
    assert unchanged_by_stat(_stat_row(stat), "a.jpg", stat)
    assert not unchanged_by_stat(_stat_row(stat), "b.jpg", stat)
    assert not unchanged_by_stat(_stat_row(stat), "a.jpg", None)


@pytest.mark.parametrize("changed", [FileStat(101, 1_000, 2_000), FileStat(100, 1_001, 2_000), FileStat(100, 1_000, 2_001)])
def test_any_stat_difference_means_read_and_hash(changed: FileStat) -> None:
    assert not unchanged_by_stat(_stat_row(FileStat(100, 1_000, 2_000)), "a.jpg", changed)


def test_unknown_or_racy_stats_and_unreadable_rows_are_never_trusted() -> None:
    racy = FileStat(100, 1_000, 2_000, racy=True)
    assert not unchanged_by_stat(_stat_row(racy), "a.jpg", racy)
    stat = FileStat(100, 1_000, 2_000)
    assert not unchanged_by_stat(_stat_row(stat, ImageStatus.UNREADABLE), "a.jpg", stat)
    assert plan({"a.jpg": CommittedRow(0, "", int(ImageStatus.DECODE_ERROR))}, "a.jpg", "") == "redo"  # never hashed


def test_a_file_changed_just_now_is_recorded_racy(tmp_path: Path) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(b"x")
    assert file_stat(path).racy and file_stat(path).recorded()[1] == -1
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert file_stat(path).recorded()[1] == -1  # an old mtime, but the ctime just moved


def test_a_file_unchanged_for_a_while_is_recorded_as_it_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.jpg"
    path.write_bytes(b"x")
    info = os.stat(path)
    monkeypatch.setattr(time, "time_ns", lambda: info.st_ctime_ns + 3_000_000_000)
    assert file_stat(path).recorded() == (1, info.st_mtime_ns, info.st_ctime_ns)


def test_resume_reads_only_files_whose_stat_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The producer of a resumed run: unchanged files are skipped unread; a file rewritten with its old
    size and mtime restored (touch -r, rsync -t) is still read, because its ctime moved."""
    import allbatch.run.engine as pipeline
    from allbatch.input.discover import discover
    from allbatch.prepare.cpu import PillowPreparer
    from allbatch.prepare.preprocessing import Preprocessing
    from allbatch.prepare.segment import SegmentationParams
    from allbatch.run.tally import Tally

    old = 1_600_000_000_000_000_000
    for k in range(4):
        (tmp_path / f"img{k}.png").write_bytes(encode(smear_like(k, (16, 16)), "PNG"))
        os.utime(tmp_path / f"img{k}.png", ns=(old, old))
    files = discover(tmp_path)
    committed = {}
    for row, item in enumerate(files):
        info = os.stat(item.path)  # as recorded by a run long after the files were written (not racy)
        digest = hashlib.sha256(item.path.read_bytes()).hexdigest()
        committed[item.relpath] = CommittedRow(row, digest, 0, (info.st_size, info.st_mtime_ns, info.st_ctime_ns))
    changed = tmp_path / "img2.png"
    replacement = bytearray(changed.read_bytes())
    replacement[-20] ^= 0xFF  # same size, different bytes
    while os.stat(changed).st_ctime_ns == committed["img2.png"].file_stat[2]:  # the file system's timestamp tick
        changed.write_bytes(bytes(replacement))
        os.utime(changed, ns=(old, old))  # mtime restored
    read: list[str] = []
    real_read = pipeline.read_encoded

    def counting_read(index: int, item: DiscoveredFile, *args: object, **kwargs: object) -> EncodedImage:
        read.append(item.relpath)
        return real_read(index, item, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "read_encoded", counting_read)
    preparer = PillowPreparer(Preprocessing(), SegmentationParams())
    tally = Tally(len(files))
    producer = pipeline._Producer(files, committed, preparer, batch_size=8, tally=tally)
    batches = list(producer._batches())
    preparer.close()
    assert read == ["img2.png"]
    assert [image.relpath for images, _ in batches for image in images] == ["img2.png"]
    assert batches[0][1] == {0: 2}  # its old row is superseded (batch position -> row)
    assert tally.skipped == 3
