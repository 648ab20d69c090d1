"""``assemble_pair`` with NumPy: the exact float32 formula, layout, float16 rounding, ``out``; the same code runs
with CuPy on the GPU (tests/test_gpu_cupy.py compares the two bit for bit)."""

from __future__ import annotations

import numpy as np
import pytest

from allbatch.prepare.assemble import assemble_pair, normalise_pair
from allbatch.prepare.preprocessing import Preprocessing

PREP = Preprocessing(mean=0.485, std=0.229)


def value_table(prep: Preprocessing) -> np.ndarray:
    """(256,) float32: each uint8 level through the formula with float32 scalar operations, one rounding each."""
    inv255, mean, inv_std = np.float32(1.0 / 255.0), np.float32(prep.mean), np.float32(1.0 / prep.std)
    table = [(np.float32(level) * inv255 - mean) * inv_std for level in range(256)]
    assert all(isinstance(value, np.float32) for value in table)
    return np.array(table, dtype=np.float32)


def images(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@pytest.mark.parametrize("prep", [PREP, Preprocessing()])
def test_every_level_is_the_float32_formula_bit_for_bit(prep: Preprocessing) -> None:
    levels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    got = assemble_pair(np, levels, levels[:, ::-1], prep)
    table = value_table(prep)
    assert got.dtype == np.float32 and got.shape == (1, 2, 3, 16, 16) and got.flags.c_contiguous
    assert np.array_equal(got[0, 0, 0].view(np.uint32), table.reshape(16, 16).view(np.uint32))
    assert np.array_equal(got[0, 1, 2].view(np.uint32), table.reshape(16, 16)[::-1].view(np.uint32))


def test_layout_is_pair_then_channel_first() -> None:
    original, segmented = images(3, 8, seed=1)
    got = assemble_pair(np, original, segmented, PREP)
    table = value_table(PREP)
    assert np.array_equal(got[:, 0], table[original].transpose(0, 3, 1, 2))
    assert np.array_equal(got[:, 1], table[segmented].transpose(0, 3, 1, 2))
    for row in range(3):  # the CPU path's per-image function is the same computation
        assert np.array_equal(normalise_pair(original[row], segmented[row], PREP), got[row])


def test_float16_is_the_float32_value_rounded_to_nearest_even() -> None:
    original, segmented = images(2, 8, seed=2)
    got = assemble_pair(np, original, segmented, PREP, "float16")
    assert got.dtype == np.float16
    assert np.array_equal(got, assemble_pair(np, original, segmented, PREP).astype(np.float16))


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_out_receives_a_slice_of_a_larger_batch(dtype: str) -> None:
    original, segmented = images(5, 8, seed=3)
    expected = assemble_pair(np, original, segmented, PREP, dtype)  # type: ignore[arg-type]
    out = np.full((7, 2, 3, 8, 8), 9, dtype=dtype)
    assert assemble_pair(np, original, segmented, PREP, dtype, out=out[1:6]) is not None  # type: ignore[arg-type]
    assert np.array_equal(out[1:6], expected) and (out[[0, 6]] == 9).all()
    with pytest.raises(ValueError, match="out must be"):
        assemble_pair(np, original, segmented, PREP, dtype, out=out)  # type: ignore[arg-type]


def test_shapes_are_checked() -> None:
    original, segmented = images(2, 8, seed=4)
    with pytest.raises(ValueError, match=r"expected two \(n, S, S, 3\) arrays"):
        assemble_pair(np, original, segmented[:1], PREP)
    with pytest.raises(ValueError, match=r"expected two \(n, S, S, 3\) arrays"):
        assemble_pair(np, original[:, :4], segmented[:, :4], PREP)
