"""resume.plan: skip, redo or new for one discovered file."""

from __future__ import annotations

from allbatch.results.resume import plan
from allbatch.results.writer import CommittedRow
from allbatch.status import ImageStatus

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
