"""The model input from the resized images: one function for NumPy (CPU) and CuPy (GPU), bit-identical.

``assemble_pair`` computes ``(x * float32(1/255) - mean) * float32(1/std)`` in float32 as separate array
operations. Each operation is rounded on its own on both sides (NumPy ufuncs; CuPy launches one kernel
per operation, so the CUDA compiler cannot contract a multiply and an add into an FMA), which makes the
GPU result bit-identical to the CPU one for the same uint8 input; CI runs the same code with NumPy. A
fused kernel would be one pass over memory instead of a few, but not the code the CPU runs: an
``ElementwiseKernel`` is CUDA source CI cannot execute, and ``cupy.fuse`` runs NumPy on host arrays but
compiles with FMA contraction on the GPU, so the two would differ in the last bit.
float16 output is the float32 value rounded to nearest even on both sides.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from allbatch.prepare.preprocessing import Preprocessing

InputDtype = Literal["float32", "float16"]


def assemble_pair(
    xp: ModuleType,
    original: Any,
    segmented: Any,
    prep: Preprocessing,
    dtype: InputDtype = "float32",
    out: Any = None,
) -> Any:
    """Cast, normalise, stack and transpose two image batches into the two-channel model input.

    Runs wherever ``xp`` runs: ``numpy`` on host arrays, ``cupy`` on device arrays (on CuPy's current
    stream: enter the producer's stream first).

    Args:
        xp: ``numpy`` or ``cupy``.
        original, segmented: (n, S, S, 3) uint8 HWC arrays of ``xp``.
        out: optional (n, 2, 3, S, S) C-contiguous ``dtype`` array of ``xp`` to write into (e.g. a slice of a
            larger batch).
    Returns:
        (n, 2, 3, S, S) ``dtype`` C-contiguous array of ``xp``; [:, 0] the original, [:, 1] the segmented image.
    """
    if original.shape != segmented.shape or original.ndim != 4 or original.shape[-1] != 3 or original.shape[1] != original.shape[2]:
        raise ValueError(f"expected two (n, S, S, 3) arrays, got {original.shape} and {segmented.shape}")
    n, size = int(original.shape[0]), int(original.shape[1])
    shape = (n, 2, 3, size, size)
    if out is not None and (tuple(out.shape) != shape or out.dtype != np.dtype(dtype) or not out.flags.c_contiguous):
        raise ValueError(f"out must be a C-contiguous {dtype} array of shape {shape}, got {out.dtype} {tuple(out.shape)}")
    pair = xp.stack([original, segmented], axis=1).astype(xp.float32)  # (n, 2, S, S, 3)
    pair *= np.float32(1.0 / 255.0)  # one rounding per operation, in place: no FMA, no extra buffer
    pair -= np.float32(prep.mean)
    pair *= np.float32(1.0 / prep.std)
    chw = pair.transpose(0, 1, 4, 2, 3)
    if out is None:
        return xp.ascontiguousarray(chw, dtype=np.dtype(dtype))
    out[...] = chw  # the float16 cast (round to nearest even) happens in this copy
    return out


def normalise_pair(
    original: npt.NDArray[np.uint8], segmented: npt.NDArray[np.uint8], prep: Preprocessing, out: npt.NDArray[np.float32] | None = None
) -> npt.NDArray[np.float32]:
    """Two (S, S, 3) uint8 images -> one (2, 3, S, S) float32 model input (original first), written into
    ``out`` (C-contiguous (2, 3, S, S) float32, e.g. a row of a batch) when given.

    ``assemble_pair`` on a batch of one: the GPU path runs the same code with CuPy.
    """
    result: npt.NDArray[np.float32] = assemble_pair(np, original[None], segmented[None], prep, out=None if out is None else out[None])[0]
    return result
