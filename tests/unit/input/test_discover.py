"""discover(): natural order, extensions, symlink policy, each file once, unreadable folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from allbatch.core.errors import UserInputError
from allbatch.input.discover import discover, natural_key


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")


def test_natural_sort_and_extensions(tmp_path: Path) -> None:
    for name in ["img10.jpg", "img2.JPG", "img1.jpeg", "b/img3.PNG", "a/x.tif", "a/y.TIFF", "c.bmp", "notes.txt", "z.gif"]:
        touch(tmp_path / name)
    found = [f.relpath for f in discover(tmp_path)]
    assert found == ["a/x.tif", "a/y.TIFF", "b/img3.PNG", "c.bmp", "img1.jpeg", "img2.JPG", "img10.jpg"]
    assert all(Path(f.path).is_absolute() for f in discover(tmp_path))


def test_natural_key_orders_numbers_numerically() -> None:
    assert sorted(["a10", "a9", "A1", "b"], key=natural_key) == ["A1", "a9", "a10", "b"]


def test_symlink_policy_and_each_file_once(tmp_path: Path) -> None:
    touch(tmp_path / "real" / "one.jpg")
    os.symlink(tmp_path / "real" / "one.jpg", tmp_path / "alias.jpg")
    os.symlink(tmp_path / "real", tmp_path / "real_link")
    os.symlink(tmp_path, tmp_path / "real" / "loop")  # a cycle must not hang or duplicate
    followed = [f.relpath for f in discover(tmp_path, "follow")]
    assert followed == ["alias.jpg"]  # the same real file is listed once, first path in order wins
    skipped = [f.relpath for f in discover(tmp_path, "skip")]
    assert skipped == ["real/one.jpg"]


def test_dangling_link_becomes_a_problem_entry(tmp_path: Path) -> None:
    os.symlink(tmp_path / "missing.jpg", tmp_path / "broken.jpg")
    (entry,) = discover(tmp_path)
    assert entry.relpath == "broken.jpg"
    assert entry.problem is not None and "cannot stat" in entry.problem


def test_unlistable_folder_becomes_a_problem_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    touch(tmp_path / "locked" / "a.jpg")
    touch(tmp_path / "open" / "b.jpg")
    if os.geteuid() != 0:
        (tmp_path / "locked").chmod(0)
    else:  # root reads everything: make scandir fail for that folder as a permission error would
        real_scandir = os.scandir

        def scandir(path: os.PathLike[str] | str) -> object:
            if Path(path).name == "locked":
                raise PermissionError(13, "Permission denied")
            return real_scandir(path)

        monkeypatch.setattr(os, "scandir", scandir)
    try:
        found = discover(tmp_path)
    finally:
        (tmp_path / "locked").chmod(0o755)
    assert [f.relpath for f in found] == ["locked", "open/b.jpg"]
    assert found[0].problem is not None and "Permission denied" in found[0].problem


def test_missing_root_and_single_file(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="not found"):
        discover(tmp_path / "nope")
    touch(tmp_path / "one.png")
    assert [f.relpath for f in discover(tmp_path / "one.png")] == ["one.png"]
    touch(tmp_path / "notes.txt")
    with pytest.raises(UserInputError, match="not an image"):
        discover(tmp_path / "notes.txt")
