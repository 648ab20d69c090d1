"""File names that are not valid UTF-8: a lossless text form, discovered, written, read back."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import pytest
from results_crash_support import COMPAT, rows_for

from allbatch.core.pathtext import fs_to_text, safe_text, text_to_fs
from allbatch.input.discover import discover
from allbatch.results.writer import ResultsWriter

NAMES = [
    b"plain.jpg",
    "caf\u00e9/\u8840.jpg".encode(),
    b"latin1-caf\xe9.jpg",
    b"\xff\xfe\x80.jpg",
    b"back\\slash.jpg",
    b"back\\xff-literal.jpg",
    b"mixed\\\xe9\\\\.jpg",
    b"truncated-utf8-\xe2\x82.jpg",
]


@pytest.mark.parametrize("raw", NAMES)
def test_text_form_is_valid_utf8_and_lossless(raw: bytes) -> None:
    text = fs_to_text(raw)
    text.encode("utf-8")  # never raises
    assert text_to_fs(text) == raw
    assert fs_to_text(os.fsdecode(raw)) == text  # str with surrogate escapes gives the same text


def test_valid_names_without_backslash_are_unchanged() -> None:
    assert fs_to_text("Benign/WBC-\u00e9-001.jpg") == "Benign/WBC-\u00e9-001.jpg"
    assert fs_to_text(b"caf\xe9.jpg") == "caf\\xe9.jpg"


def test_distinct_names_never_share_a_text() -> None:
    texts = [fs_to_text(raw) for raw in NAMES]
    assert len(set(texts)) == len(NAMES)


def test_a_stray_backslash_is_refused_by_the_inverse() -> None:
    with pytest.raises(ValueError, match="stray backslash"):
        text_to_fs("a\\q.jpg")


def test_safe_text_escapes_lone_surrogates() -> None:
    assert safe_text(os.fsdecode(b"/data/caf\xe9")) == "/data/caf\\udce9"


def test_discover_and_writer_keep_a_non_utf8_file_in_a_non_utf8_folder(tmp_path: Path) -> None:
    folder = os.path.join(os.fsencode(tmp_path), b"slides-\xe9")
    os.makedirs(os.path.join(folder, b"sub\xff"))
    Path(os.fsdecode(os.path.join(folder, b"sub\xff", b"img\xfe.jpg"))).write_bytes(b"x")
    root = Path(os.fsdecode(folder))
    (item,) = discover(root)
    assert item.relpath == "sub\\xff/img\\xfe.jpg"
    assert item.path.read_bytes() == b"x"  # the real path still opens
    rows = rows_for([0])
    rows.paths = [item.relpath]
    out = tmp_path / "r.h5"
    provenance = {"input_root": str(root), "argv": ["allbatch", "run", str(root)]}
    with ResultsWriter.open(out, mode="new", provenance=provenance, compat=COMPAT) as writer:
        writer.append(rows)
    with ResultsWriter.open(out, mode="resume", provenance=provenance, compat=COMPAT) as writer:
        assert list(writer.committed()) == [item.relpath]
    with h5py.File(out, "r") as f:
        assert f["images/path"].asstr()[:].tolist() == [item.relpath]
        assert text_to_fs(f["images/path"].asstr()[0]) == b"sub\xff/img\xfe.jpg"
