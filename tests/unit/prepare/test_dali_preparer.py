"""DaliPreparer on DALI's CPU operators against the Pillow/NumPy path: exact rows, statuses, partial batches
(on the development images: tests/realdata/test_dali_preparer_realdata.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dali_support import SEG, count_fed_batches, dali_cpu_preparer, encoded, needs_dali, recipe_reference
from image_factory import encode, smear_like, write_bad_files

from allbatch.core.records import EncodedImage
from allbatch.core.status import ImageStatus
from allbatch.input.discover import discover
from allbatch.input.read import read_encoded
from allbatch.prepare.cpu import PillowPreparer
from allbatch.prepare.preprocessing import Preprocessing

pytestmark = needs_dali

RESIZE_TOLERANCE = 24 / 255 / 0.25
"""Largest input difference allowed where DALI resizes (24 levels, see test_dali_graph), in input units."""


def test_other_sizes_are_close_and_mask_fractions_exact() -> None:
    prep = Preprocessing(blank_bottom_fraction=0.2)
    shapes = [(300, 400), (180, 240), (224, 224), (97, 224), (640, 480)]
    datas = [encode(smear_like(seed, shape), "PNG") for seed, shape in enumerate(shapes)]
    batch = dali_cpu_preparer(prep).prepare(encoded(datas))
    for row, data in enumerate(datas):
        pair, fraction = recipe_reference(data, prep)
        assert np.abs(batch.inputs[row] - pair).max() <= RESIZE_TOLERANCE
        assert batch.mask_fraction[row] == np.float32(fraction)
    assert np.array_equal(batch.inputs[2], recipe_reference(datas[2], prep)[0])


def test_last_partial_batch_is_exact() -> None:
    prep = Preprocessing()
    datas = [encode(smear_like(seed), "PNG") for seed in range(10)]
    preparer = dali_cpu_preparer(prep, max_batch=4)
    sizes = count_fed_batches(preparer)
    batch = preparer.prepare(encoded(datas))
    assert sizes == [4, 4, 2]
    assert batch.inputs.shape == (10, 2, 3, 224, 224) and batch.mask_fraction.shape == (10,)
    for row, data in enumerate(datas):
        pair, fraction = recipe_reference(data, prep)
        assert np.array_equal(batch.inputs[row], pair)
        assert batch.mask_fraction[row] == np.float32(fraction)


def test_corrupt_files_are_isolated_and_no_row_is_lost() -> None:
    prep = Preprocessing()
    datas = [encode(smear_like(seed), "PNG") for seed in range(9)]
    good_png = bytearray(datas[4])
    start = good_png.index(b"IDAT") + 20
    for k in range(start, start + 180):
        good_png[k] ^= 0x5A
    whole = encode(smear_like(20), "JPEG", quality=90)
    datas[1] = whole[: len(whole) // 2]  # refused by the header check
    datas[4] = bytes(good_png)  # passes the header check, fails in DALI: dropped, the rest run once more
    datas[6] = np.random.default_rng(3).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    preparer = dali_cpu_preparer(prep, max_batch=9)
    batch = preparer.prepare(encoded(datas))
    failed = {i: (image.status, image.error) for i, image in enumerate(batch.images) if image.status != ImageStatus.OK}
    assert sorted(failed) == [1, 4, 6]
    assert all(status == ImageStatus.DECODE_ERROR for status, _ in failed.values())
    assert "truncated JPEG" in failed[1][1]
    assert failed[4][1].startswith("DALI could not decode the image")
    assert failed[6][1] == "not a recognised image format"
    assert batch.ok_positions == [0, 2, 3, 5, 7, 8]
    assert batch.inputs.shape[0] == 6
    for row, position in enumerate(batch.ok_positions):
        assert np.array_equal(batch.inputs[row], recipe_reference(datas[position], prep)[0])
    assert np.isnan(batch.mask_fraction[[1, 4, 6]]).all() and not np.isnan(batch.mask_fraction[batch.ok_positions]).any()
    assert preparer.runner.rebuilds == 0  # the pipeline that failed on the file ran the rest (issue 22)


def test_statuses_match_the_cpu_path_on_every_kind_of_bad_file(tmp_path: Path) -> None:
    expected = write_bad_files(tmp_path)
    images = [read_encoded(i, item) for i, item in enumerate(discover(tmp_path))]
    prep = Preprocessing()
    dali = dali_cpu_preparer(prep).prepare(images)
    cpu_images = [read_encoded(i, item) for i, item in enumerate(discover(tmp_path))]
    cpu = PillowPreparer(prep, SEG, threads=1).prepare(cpu_images)
    assert {image.relpath: image.status.name.lower() for image in dali.images} == expected
    assert [image.status for image in dali.images] == [image.status for image in cpu.images]
    assert np.array_equal(np.isnan(dali.mask_fraction), np.isnan(cpu.mask_fraction))
    assert dali.inputs.shape == cpu.inputs.shape
    # 16-bit grey is scaled by DALI and shifted by Pillow (1 level); the large field is resized.
    assert np.abs(dali.inputs - cpu.inputs).max() <= RESIZE_TOLERANCE


def test_unreadable_and_already_failed_images_pass_through() -> None:
    images = [
        EncodedImage(0, "gone.jpg", None, "", ImageStatus.UNREADABLE, "cannot read file"),
        EncodedImage(1, "empty.jpg", None, "abc", ImageStatus.EMPTY, "file is empty (0 bytes)"),
    ]
    preparer = dali_cpu_preparer(Preprocessing())
    batch = preparer.prepare(images)
    assert [(image.status, image.error) for image in batch.images] == [
        (ImageStatus.UNREADABLE, "cannot read file"),
        (ImageStatus.EMPTY, "file is empty (0 bytes)"),
    ]
    assert batch.inputs.shape == (0, 2, 3, 224, 224) and np.isnan(batch.mask_fraction).all()
    assert preparer.runner.builds == 0  # nothing to decode: no pipeline
    assert preparer.prepare([]).inputs.shape == (0, 2, 3, 224, 224)


def test_float16_inputs_and_names() -> None:
    prep = Preprocessing()
    datas = [encode(smear_like(seed), "PNG") for seed in range(3)]
    half = dali_cpu_preparer(prep, input_dtype="float16")
    batch = half.prepare(encoded(datas))
    assert half.name == "dali-cpu"
    assert batch.inputs.dtype == np.float16
    full = np.stack([recipe_reference(data, prep)[0] for data in datas])
    assert np.array_equal(batch.inputs, full.astype(np.float16))


@pytest.mark.parametrize(
    ("pixels", "max_items", "max_pixels", "expected"),
    [
        ([10, 10, 10, 10], 2, 100, [(0, 2), (2, 4)]),  # the item count binds
        ([40, 40, 40, 10], 8, 100, [(0, 2), (2, 4)]),  # the pixel budget binds
        ([10, 500, 10], 8, 100, [(0, 1), (1, 2), (2, 3)]),  # an image above the budget runs alone
        ([100, 1], 8, 100, [(0, 1), (1, 2)]),
        ([], 4, 100, []),
    ],
)
def test_pixel_bounded_chunks(pixels: list[int], max_items: int, max_pixels: int, expected: list[tuple[int, int]]) -> None:
    from allbatch.prepare.dali.preparer import pixel_bounded_chunks

    assert [(r.start, r.stop) for r in pixel_bounded_chunks(pixels, max_items, max_pixels)] == expected


def test_pixel_budget_splits_runs_without_changing_rows() -> None:
    """Large frames at a big batch are decoded in several DALI runs (bounded memory); rows stay exact."""
    datas = [encode(smear_like(seed, size=(96 + 8 * seed, 128)), "PNG") for seed in range(7)]
    prep = Preprocessing(size=64, blank_bottom_fraction=0.1)
    whole = dali_cpu_preparer(prep, max_batch=16)
    split = dali_cpu_preparer(prep, max_batch=16, max_run_pixels=40_000)  # 3 runs: 3 + 2 + 2 frames
    expected, got = whole.prepare(encoded(datas)), split.prepare(encoded(datas))
    whole.close()
    split.close()
    assert whole.runs == 1 and split.runs == 3
    assert np.array_equal(got.inputs, expected.inputs)
    assert np.array_equal(got.mask_fraction, expected.mask_fraction)


def test_a_run_gives_dali_one_thread_per_usable_core(monkeypatch: pytest.MonkeyPatch, tiny_model: Path, tmp_path: Path) -> None:
    import os

    from allbatch.model.manifest import load_model_artifact
    from allbatch.run.config import RunConfig
    from allbatch.run.plan import MAX_AUTO_DECODE_THREADS, make_preparer

    artifact = load_model_artifact(tiny_model)
    config = RunConfig(source=tmp_path, output=tmp_path / "out.h5")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(24)), raising=False)  # a 24-core machine
    assert make_preparer("dali-cpu", artifact, config).runner.num_threads == MAX_AUTO_DECODE_THREADS  # type: ignore[attr-defined]
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert make_preparer("dali-cpu", artifact, config).runner.num_threads == 3  # type: ignore[attr-defined]
    explicit = RunConfig(source=tmp_path, output=tmp_path / "out.h5", decode_threads=5)
    assert make_preparer("dali-cpu", artifact, explicit).runner.num_threads == 5  # type: ignore[attr-defined]
