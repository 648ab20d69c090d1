"""The backend protocol every runtime implements (ONNX Runtime, torch CUDA, TensorRT)."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Protocol, Self

import numpy as np
import numpy.typing as npt


class Backend(Protocol):
    """Runs the model on batches. Resources are created in ``__enter__`` and freed in ``__exit__``.

    ``infer`` takes a (N, 2, 3, S, S) batch normalised as the manifest says: a NumPy float32 array on
    the host, or for GPU backends a CUDA array (CuPy, or anything with ``__cuda_array_interface__`` /
    DLPack) already on the device, and returns (N, num_classes) float32 probabilities on the host.
    """

    name: str
    """Registry name: "onnxruntime", "torch" or "tensorrt"."""
    device: str
    """Human-readable device, e.g. "cpu (2 cores)" or "NVIDIA H100 80GB HBM3"."""

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None: ...

    def infer(self, batch: Any) -> npt.NDArray[np.float32]: ...

    def describe(self) -> dict[str, Any]:
        """Provenance written into results.h5 (versions, precision, engine key, ...)."""
        ...
