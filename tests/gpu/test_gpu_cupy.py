"""``assemble_pair`` with CuPy on the GPU equals the NumPy run bit for bit; needs CuPy and a CUDA GPU, not DALI."""

from __future__ import annotations

import numpy as np
import pytest
from dali_support import cuda_reason

from allbatch.prepare.assemble import assemble_pair
from allbatch.prepare.preprocessing import Preprocessing

_NO_CUDA = cuda_reason()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_NO_CUDA is not None, reason=f"needs a CUDA GPU with CuPy: {_NO_CUDA}")]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
@pytest.mark.parametrize("prep", [Preprocessing(mean=0.485, std=0.229), Preprocessing()])
def test_cupy_assembly_equals_numpy_bit_for_bit(dtype: str, prep: Preprocessing) -> None:
    import cupy

    rng = np.random.default_rng(0)
    original = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    segmented = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    expected = assemble_pair(np, original, segmented, prep, dtype)  # type: ignore[arg-type]
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:  # as the DALI preparer runs it: on its own stream
        got = assemble_pair(cupy, cupy.asarray(original), cupy.asarray(segmented), prep, dtype)  # type: ignore[arg-type]
        out = cupy.full((7, 2, 3, 32, 32), 9, dtype=dtype)
        # DALI hands over views; a strided (reversed) input must give the same rows
        flipped = assemble_pair(cupy, cupy.asarray(original)[::-1], cupy.asarray(segmented)[::-1], prep, dtype)  # type: ignore[arg-type]
        assemble_pair(cupy, cupy.asarray(original), cupy.asarray(segmented), prep, dtype, out=out[1:6])  # type: ignore[arg-type]
    stream.synchronize()
    assert isinstance(got, cupy.ndarray) and got.dtype == np.dtype(dtype) and got.shape == (5, 2, 3, 32, 32)
    view = np.uint32 if dtype == "float32" else np.uint16
    assert np.array_equal(cupy.asnumpy(got).view(view), expected.view(view))
    assert np.array_equal(cupy.asnumpy(flipped), expected[::-1])
    host_out = cupy.asnumpy(out)
    assert np.array_equal(host_out[1:6], expected) and (host_out[[0, 6]] == 9).all()
    with pytest.raises(ValueError, match="out must be"):
        assemble_pair(cupy, cupy.asarray(original), cupy.asarray(segmented), prep, dtype, out=out)  # type: ignore[arg-type]


def test_every_uint8_level_on_the_gpu() -> None:
    import cupy

    levels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=3)
    prep = Preprocessing(mean=0.485, std=0.229)
    expected = assemble_pair(np, levels, levels, prep)
    got = cupy.asnumpy(assemble_pair(cupy, cupy.asarray(levels), cupy.asarray(levels), prep))
    assert np.array_equal(got.view(np.uint32), expected.view(np.uint32))
