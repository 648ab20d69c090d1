"""The generated fuzz corpus (tests/fuzz_corpus.py) through both decoders: the same status for every
file, never a crash, and no file without a usable image reported ok."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from dali_support import HAS_DALI
from fuzz_corpus import fuzz_corpus

from allbatch.core.records import Preparer
from allbatch.core.status import ImageStatus
from allbatch.input.read import encoded_from_bytes
from allbatch.prepare.cpu import PillowPreparer
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import SegmentationParams

CORPUS = fuzz_corpus()
NAMES = sorted(CORPUS)


def _pillow() -> Preparer:
    return PillowPreparer(Preprocessing(), SegmentationParams(), threads=2)


def _dali_cpu() -> Preparer:
    from allbatch.prepare.dali.preparer import DaliPreparer

    return DaliPreparer(Preprocessing(), SegmentationParams(), device="cpu", max_batch=64, num_threads=2)


def statuses(make: Callable[[], Preparer]) -> dict[str, tuple[str, str]]:
    """{name: (status name, error)} after one preparer's ``prepare`` on the whole corpus."""
    images = [encoded_from_bytes(i, name, CORPUS[name][0]) for i, name in enumerate(NAMES)]
    preparer = make()
    try:
        batch = preparer.prepare(images)
    finally:
        preparer.close()
    assert batch.inputs.shape[0] == len(batch.ok_positions)
    return {image.relpath: (ImageStatus(image.status).name.lower(), image.error) for image in batch.images}


@pytest.fixture(scope="module")
def pillow_statuses() -> dict[str, tuple[str, str]]:
    return statuses(_pillow)


def test_corpus_is_deterministic_and_large_enough() -> None:
    again = fuzz_corpus()
    assert {name: data for name, (data, _) in again.items()} == {name: data for name, (data, _) in CORPUS.items()}
    assert len(CORPUS) >= 200


def test_pillow_path_meets_every_expectation(pillow_statuses: dict[str, tuple[str, str]]) -> None:
    wrong = {}
    for name, (_, expected) in CORPUS.items():
        status, error = pillow_statuses[name]
        if status != "ok":
            assert error and "\n" not in error, name
        if (expected == "never_ok" and status == "ok") or expected not in ("never_ok", "any", status):
            wrong[name] = (expected, status, error)
    assert not wrong


@pytest.mark.dali
@pytest.mark.skipif(not HAS_DALI, reason="nvidia-dali is not installed")
def test_dali_cpu_gives_the_same_status_for_every_file(pillow_statuses: dict[str, tuple[str, str]]) -> None:
    dali = statuses(_dali_cpu)
    disagree = {name: (pillow_statuses[name], dali[name]) for name in NAMES if pillow_statuses[name][0] != dali[name][0]}
    assert not disagree
