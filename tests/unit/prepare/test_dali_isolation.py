"""Bad-file isolation: the generic bisecting retry, and the DALI preparer's use of it on real DALI (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
from bad_bytes import random_bytes, truncated_jpeg
from dali_support import HAS_DALI
from image_factory import encode, smear_like

from allbatch.prepare.dali.isolation import dali_error_message, is_decode_error, run_isolating

# ----- the generic bisect, with a fake runner -------------------------------------------------------


class ItemError(RuntimeError):
    pass


def fake_runner(bad: set[str], calls: list[list[str]]):
    def run(items: list[str]) -> list[str]:
        calls.append(list(items))
        broken = [item for item in items if item in bad]
        if broken:
            raise ItemError(f"cannot process {broken[0]}")
        return [item.upper() for item in items]

    return run


def test_a_clean_batch_runs_once() -> None:
    calls: list[list[str]] = []
    items = [f"f{i}" for i in range(9)]
    outcome = run_isolating(items, fake_runner(set(), calls), lambda exc: isinstance(exc, ItemError))
    assert outcome.runs == 1 and calls == [items]
    assert outcome.chunks == [(list(range(9)), [item.upper() for item in items])]
    assert outcome.failures == {}


@pytest.mark.parametrize("seed", range(40))
def test_bisect_isolates_exactly_the_bad_items_and_loses_no_row(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    items = [f"f{i}" for i in range(n)]
    bad = {item for item in items if rng.random() < 0.15}
    calls: list[list[str]] = []
    outcome = run_isolating(items, fake_runner(bad, calls), lambda exc: isinstance(exc, ItemError))
    assert {items[p] for p in outcome.failures} == bad
    assert all(f"cannot process {items[p]}" in str(exc) for p, exc in outcome.failures.items())
    done = [p for positions, _ in outcome.chunks for p in positions]
    assert done == sorted(done) and sorted(done + list(outcome.failures)) == list(range(n))  # each once, in order
    for positions, result in outcome.chunks:
        assert result == [items[p].upper() for p in positions]
    assert outcome.runs == len(calls)
    if len(bad) == 1:
        assert outcome.runs <= 1 + 2 * int(np.ceil(np.log2(n)))


def test_errors_that_are_not_the_items_fault_propagate() -> None:
    def run(items: list[str]) -> list[str]:
        raise MemoryError("out of memory")

    with pytest.raises(MemoryError):
        run_isolating(["a", "b"], run, lambda exc: isinstance(exc, ItemError))
    assert run_isolating([], run, lambda exc: True).runs == 0


def test_dali_error_classification_and_message() -> None:
    text = (
        "Critical error in pipeline:\nError in CPU operator `nvidia.dali.fn.decoders.image`,\nwhich was used ...\n\n"
        "encountered:\n\nFailed to decode sample #3 : \nCurrent pipeline object is no longer valid."
    )
    assert is_decode_error(RuntimeError(text))
    assert dali_error_message(RuntimeError(text)) == "DALI could not decode the image: Failed to decode sample"
    mixed = text.replace("CPU operator", "MIXED operator")
    assert is_decode_error(RuntimeError(mixed))
    other = text.replace("fn.decoders.image", "fn.resize")
    assert not is_decode_error(RuntimeError(other))
    assert not is_decode_error(ValueError(text))


# ----- real DALI on the CPU ------------------------------------------------------------------------


@pytest.mark.dali
@pytest.mark.skipif(not HAS_DALI, reason="nvidia-dali is not installed")
@pytest.mark.parametrize("max_batch", [9, 4])
def test_real_dali_bisect_marks_exactly_the_corrupt_files(max_batch: int) -> None:
    from allbatch.prepare.dali.pipeline import DaliRunner, GraphBatch
    from allbatch.prepare.preprocessing import Preprocessing
    from allbatch.prepare.segment import SegmentationParams

    images = [smear_like(seed) for seed in range(9)]
    datas = [encode(image, "PNG") for image in images]
    datas[2] = truncated_jpeg()  # no header check here: DALI itself must fail on these two
    datas[7] = random_bytes()
    runner = DaliRunner(Preprocessing(), SegmentationParams(), "cpu", max_batch=max_batch, num_threads=1)
    failures: dict[int, Exception] = {}
    rows: dict[int, GraphBatch] = {}
    for start in range(0, 9, max_batch):
        chunk = list(range(start, min(9, start + max_batch)))
        outcome = run_isolating(chunk, lambda positions: runner.run([datas[p] for p in positions]), is_decode_error)
        failures.update({chunk[i]: exc for i, exc in outcome.failures.items()})
        for positions, batch in outcome.chunks:
            assert batch.original.shape[0] == len(positions)
            rows.update({chunk[p]: batch.original[row] for row, p in enumerate(positions)})
    assert sorted(failures) == [2, 7]
    assert all(dali_error_message(exc).startswith("DALI could not decode the image") for exc in failures.values())
    assert sorted(rows) == [0, 1, 3, 4, 5, 6, 8]
    assert all(np.array_equal(rows[p], images[p]) for p in rows)
    assert runner.rebuilds == 0  # DALI 2.4 keeps the pipeline usable after a decode error: rows stay exact
