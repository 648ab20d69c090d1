"""The backend protocol every runtime implements (ONNX Runtime, torch CUDA, TensorRT), and what they return."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class InferenceOutput:
    """What a backend returns for N images: three float32 NumPy arrays on the host, row i = image i.

    - ``probs`` (N, C): softmax of ``logits``; the class is its argmax.
    - ``logits`` (N, C): the head's outputs divided by the model's temperature (manifest ``temperature``),
      so ``probs`` are the calibrated probabilities; quality control derives energy and margins from them.
    - ``features`` (N, F): the pooled backbone features of the original and the segmented image,
      concatenated (F = 2 x 1920 = 3840 for DenseNet201); quality control measures the distance from the
      training data in this space.
    """

    probs: F32
    logits: F32
    features: F32

    def __post_init__(self) -> None:
        n = self.probs.shape[0]
        if self.logits.shape != self.probs.shape or self.features.ndim != 2 or self.features.shape[0] != n:
            shapes = f"probs {self.probs.shape}, logits {self.logits.shape}, features {self.features.shape}"
            raise ValueError(f"inconsistent inference output shapes: {shapes}")

    def __len__(self) -> int:
        return int(self.probs.shape[0])

    def __getitem__(self, rows: slice | Sequence[int] | npt.NDArray[np.integer[Any]]) -> InferenceOutput:
        """The same three arrays restricted to ``rows`` (a slice, or integer positions)."""
        index = rows if isinstance(rows, slice) else np.asarray(rows, dtype=np.intp)
        return InferenceOutput(self.probs[index], self.logits[index], self.features[index])

    @classmethod
    def empty(cls, num_classes: int, num_features: int) -> InferenceOutput:
        """Zero rows, the right widths: what a batch in which no image decoded produces."""
        return cls(
            np.zeros((0, num_classes), np.float32),
            np.zeros((0, num_classes), np.float32),
            np.zeros((0, num_features), np.float32),
        )

    @classmethod
    def concat(cls, parts: Sequence[InferenceOutput]) -> InferenceOutput:
        """Rows of ``parts`` one after the other (at least one part)."""
        if len(parts) == 1:
            return parts[0]
        return cls(
            np.concatenate([part.probs for part in parts]),
            np.concatenate([part.logits for part in parts]),
            np.concatenate([part.features for part in parts]),
        )

    @classmethod
    def from_packed(cls, packed: npt.ArrayLike, num_classes: int) -> InferenceOutput:
        """Split one (N, 2C + F) array laid out ``[probs | logits | features]`` (what the torch backend's
        CUDA graphs fill, so each graph keeps one static output buffer)."""
        array = np.asarray(packed, dtype=np.float32)
        c = num_classes
        return cls(array[:, :c], array[:, c : 2 * c], array[:, 2 * c :])


class Backend(Protocol):
    """Runs the model on batches. Resources are created in ``__enter__`` and freed in ``__exit__``.

    ``infer`` takes a (N, 2, 3, S, S) batch normalised as the manifest says: a NumPy float32 array on
    the host, or for GPU backends a CUDA array (CuPy, or anything with ``__cuda_array_interface__`` /
    DLPack) already on the device, and returns an ``InferenceOutput`` (probs, logits, features) on the host.
    """

    name: str
    """Registry name: "onnxruntime", "torch" or "tensorrt"."""
    device: str
    """Human-readable device, e.g. "cpu (2 cores)" or "NVIDIA H100 80GB HBM3"."""

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None: ...

    def infer(self, batch: Any) -> InferenceOutput: ...

    def describe(self) -> dict[str, Any]:
        """Provenance written into results.h5 (versions, precision, engine key, ...)."""
        ...
