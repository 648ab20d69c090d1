"""The normalised two-channel model input from DALI's HWC uint8 outputs: CuPy on the GPU, NumPy reference.

Both compute ``(x * float32(1/255) - mean) * float32(1/std)`` in float32 exactly as
``allbatch.preprocess.normalise_pair`` does; the CUDA kernel uses round-to-nearest intrinsics
(``__fmul_rn``/``__fsub_rn``) so the compiler cannot contract them into an FMA, which makes the GPU
result bit-identical to the NumPy one for the same uint8 input. float16 output is the float32 value
rounded to nearest even.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from allbatch.preprocess import Preprocessing

InputDtype = Literal["float32", "float16"]

_KERNEL_BODY = r"""
const ptrdiff_t plane = (ptrdiff_t)size * size;
ptrdiff_t rest = i;
const ptrdiff_t pixel = rest % plane;
rest /= plane;
const int channel = (int)(rest % 3);
rest /= 3;
const int which = (int)(rest % 2);
const ptrdiff_t sample = rest / 2;
const ptrdiff_t src = (sample * plane + pixel) * 3 + channel;
const float x = (float)(which == 0 ? original[src] : segmented[src]);
out = (T)__fmul_rn(__fsub_rn(__fmul_rn(x, inv255), mean), inv_std);
"""


def _constants(prep: Preprocessing) -> tuple[np.float32, np.float32, np.float32]:
    return np.float32(1.0 / 255.0), np.float32(prep.mean), np.float32(1.0 / prep.std)


def assemble_numpy(
    original: npt.NDArray[np.uint8],
    segmented: npt.NDArray[np.uint8],
    prep: Preprocessing,
    dtype: InputDtype = "float32",
) -> npt.NDArray[np.floating[Any]]:
    """Reference assembly on the host.

    Args:
        original, segmented: (n, S, S, 3) uint8 HWC, host memory.
    Returns:
        (n, 2, 3, S, S) ``dtype``, C-contiguous; [:, 0] the original, [:, 1] the segmented image.
    """
    if original.shape != segmented.shape or original.ndim != 4 or original.shape[-1] != 3:
        raise ValueError(f"expected two (n, S, S, 3) arrays, got {original.shape} and {segmented.shape}")
    inv255, mean, inv_std = _constants(prep)
    pair = np.stack([original, segmented], axis=1).astype(np.float32)  # (n, 2, S, S, 3)
    pair = (pair * inv255 - mean) * inv_std
    return np.ascontiguousarray(pair.transpose(0, 1, 4, 2, 3), dtype=np.dtype(dtype))


@cache
def _kernel() -> Any:
    import cupy

    return cupy.ElementwiseKernel(
        "raw uint8 original, raw uint8 segmented, int32 size, float32 inv255, float32 mean, float32 inv_std",
        "T out",
        _KERNEL_BODY,
        "allbatch_assemble_pair",
    )


def assemble_cupy(
    original: Any,
    segmented: Any,
    prep: Preprocessing,
    dtype: InputDtype = "float32",
    out: Any = None,
) -> Any:
    """GPU assembly in one fused kernel (cast, normalise, HWC -> CHW, pair stacking); no host copy.

    Runs on CuPy's current stream: enter the producer's stream (``with stream:``) first.

    Args:
        original, segmented: (n, S, S, 3) uint8 HWC CuPy arrays (DALI's outputs via DLPack).
        out: optional (n, 2, 3, S, S) C-contiguous CuPy array of ``dtype`` to write into (e.g. a slice
            of a larger batch).
    Returns:
        (n, 2, 3, S, S) CuPy array of ``dtype`` on the inputs' device.
    """
    import cupy

    if original.shape != segmented.shape or original.ndim != 4 or original.shape[-1] != 3 or original.shape[1] != original.shape[2]:
        raise ValueError(f"expected two (n, S, S, 3) arrays, got {original.shape} and {segmented.shape}")
    n, size = int(original.shape[0]), int(original.shape[1])
    shape = (n, 2, 3, size, size)
    if out is None:
        out = cupy.empty(shape, dtype=dtype)
    elif out.shape != shape or out.dtype != np.dtype(dtype) or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {dtype} array of shape {shape}, got {out.dtype} {out.shape}")
    if n == 0:
        return out
    inv255, mean, inv_std = _constants(prep)
    _kernel()(
        cupy.ascontiguousarray(original, dtype=cupy.uint8),
        cupy.ascontiguousarray(segmented, dtype=cupy.uint8),
        np.int32(size),
        inv255,
        mean,
        inv_std,
        out,
    )
    return out
