"""The backend protocol, the base class every runtime derives from (ONNX Runtime, OpenVINO, torch CUDA, TensorRT),
and what they return."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Protocol, Self

import numpy as np
import numpy.typing as npt

from allbatch.backends.validate import InvalidBatchError, validate_batch
from allbatch.core.errors import UserInputError
from allbatch.model.manifest import ModelArtifact

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


class PendingInference(Protocol):
    """Inference started by ``Backend.submit``; ``result`` waits for it and returns the host outputs."""

    def result(self) -> InferenceOutput: ...


@dataclass(frozen=True)
class _Launched:
    """The chunks of one ``submit``: each one's finisher (waits for its outputs), in row order."""

    finishers: list[Callable[[], InferenceOutput]]
    empty: InferenceOutput

    def result(self) -> InferenceOutput:
        if not self.finishers:
            return self.empty
        return InferenceOutput.concat([finish() for finish in self.finishers])


class Backend(Protocol):
    """Runs the model on batches. Resources are created in ``__enter__`` and freed in ``__exit__``.

    ``infer`` takes a (N, 2, 3, S, S) batch normalised as the manifest says: a NumPy float32 array on
    the host, or for GPU backends a CUDA array (CuPy, or anything with ``__cuda_array_interface__`` /
    DLPack) already on the device, and returns an ``InferenceOutput`` (probs, logits, features) on the host.
    """

    name: str
    """Registry name: "onnxruntime", "openvino", "torch" or "tensorrt"."""
    device: str
    """Human-readable device, e.g. "cpu (2 cores)" or "NVIDIA H100 80GB HBM3"."""

    submits_async: bool
    """True when ``submit`` returns before the device has finished (the run's consumer then overlaps batches)."""

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None: ...

    def infer(self, batch: Any) -> InferenceOutput: ...

    def submit(self, batch: Any) -> PendingInference:
        """Start ``infer(batch)``; ``result()`` returns the same outputs. A GPU backend returns once the work
        is queued on the device, so the caller can write the previous batch's rows meanwhile; others compute
        before returning."""
        ...

    def describe(self) -> dict[str, Any]:
        """Provenance written into results.h5 (versions, precision, engine key, ...)."""
        ...


class BaseBackend(ABC):
    """What every backend shares (the Polygraphy ``BaseRunner`` idea): the lifetime guard, input validation,
    host/device dispatch and chunking are written here once; a backend implements ``_load`` / ``_release``
    (create and free its runtime), ``_infer_chunk`` (one chunk of at most ``max_batch`` rows) and ``describe``.

    ``infer(batch)`` takes a (N, 2, 3, S, S) float32 batch normalised as the manifest says:

    - a NumPy array on the host: validated, then handed to ``_from_host`` (a GPU backend uploads it there);
    - any other array: only for backends with ``accepts_device_arrays`` (``_from_device`` validates it and
      returns something sliceable along N), else InvalidBatchError naming the decoder to use;

    and returns an ``InferenceOutput`` on the host. Rows are run in chunks of ``max_batch`` (None: one chunk)
    inside ``_call_context()`` (e.g. torch's inference mode, the backend's CUDA device).

    ``_accept()`` runs right after ``_load`` with ``infer`` already usable (a reduced-precision agreement
    gate); if it raises, the backend is closed again before the error propagates.
    """

    name: str
    """Registry name: "onnxruntime", "openvino", "torch" or "tensorrt"."""
    accepts_device_arrays: ClassVar[bool] = False
    """True for GPU backends that take CUDA arrays in place; host-only backends take NumPy arrays only."""

    def __init__(self, artifact: ModelArtifact, max_batch: int | None) -> None:
        if max_batch is not None and max_batch < 1:
            raise UserInputError(f"{self.name}: max_batch must be at least 1, got {max_batch}")
        self.artifact = artifact
        self.max_batch = max_batch
        self.device = f"cpu ({os.cpu_count() or 1} cores)"
        """Human-readable device, e.g. "cpu (2 cores)" or "NVIDIA H100 80GB HBM3" (set by ``_load`` on a GPU)."""
        self.submits_async = False
        """True when ``submit`` returns before the device has finished (set by a GPU backend's ``_load``)."""
        self._active = False

    # -- lifetime ---------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._load()
        self._active = True
        try:
            self._accept()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._active = False
        self._release()

    @abstractmethod
    def _load(self) -> None:
        """Create the runtime (session, compiled model, engine); raise BackendUnavailableError or ModelError."""

    @abstractmethod
    def _release(self) -> None:
        """Free what ``_load`` created; also called after a failed ``_accept`` (so it must cope with a partial load)."""

    def _accept(self) -> None:
        """Refuse (raise) a runtime whose results cannot be trusted; nothing to check by default."""
        return

    # -- inference --------------------------------------------------------------------------------

    def infer(self, batch: Any) -> InferenceOutput:
        """(N, 2, 3, S, S) float32 -> probs, logits (N, C) and features (N, F), float32 on the host.

        Raises:
            RuntimeError: called outside the backend's ``with`` block.
            InvalidBatchError: wrong shape or dtype, or an array type this backend does not take.
        """
        return self.submit(batch).result()

    def submit(self, batch: Any) -> PendingInference:
        """Start inference of ``batch`` (as ``infer`` takes it); ``result()`` gives ``infer``'s outputs.

        Each chunk is handed to ``_launch_chunk``: by default it computes there and then, so ``submit``
        returns finished work; a GPU backend queues the chunk on its stream and returns at once (the
        consumer then writes the previous batch's rows while the device computes, issue 22).

        Raises:
            as ``infer``; errors of the device work itself may surface from ``result()``.
        """
        if not self._active:
            raise RuntimeError(f"{type(self).__name__}.infer called outside its `with` block")
        manifest = self.artifact.manifest
        with self._call_context():
            if isinstance(batch, np.ndarray):
                validate_batch(batch.shape, batch.dtype.name, manifest, self.name)
                x = self._from_host(batch)
            elif self.accepts_device_arrays:
                x = self._from_device(batch)
            else:
                raise InvalidBatchError(
                    f"{self.name} runs on the CPU and takes a NumPy array; got {type(batch).__module__}.{type(batch).__name__} "
                    f"(use --decoder cpu or dali-cpu with --backend {self.name})"
                )
            n = int(x.shape[0])
            step = self.max_batch or max(n, 1)
            finishers = [self._launch_chunk(x[start : start + step]) for start in range(0, n, step)]
        return _Launched(finishers, InferenceOutput.empty(len(manifest.class_names), manifest.num_features))

    def _launch_chunk(self, x: Any) -> Callable[[], InferenceOutput]:
        """Start one chunk; the returned callable waits for it and returns its host outputs. Default: compute now."""
        output = self._infer_chunk(x)
        return lambda: output

    def _call_context(self) -> AbstractContextManager[Any]:
        """Entered around one ``infer`` call (validation, transfers and every chunk)."""
        return nullcontext()

    def _from_host(self, batch: npt.NDArray[np.float32]) -> Any:
        """A validated host batch as ``_infer_chunk`` takes it (C-contiguous NumPy by default)."""
        return np.ascontiguousarray(batch)

    def _from_device(self, batch: Any) -> Any:
        """A device batch, validated, as ``_infer_chunk`` takes it (backends with ``accepts_device_arrays``)."""
        raise NotImplementedError

    @abstractmethod
    def _infer_chunk(self, x: Any) -> InferenceOutput:
        """One chunk of 1..max_batch rows (as ``_from_host`` / ``_from_device`` returned it) -> host outputs."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Provenance written into results.h5 (versions, ``compute_precision``, engine key, ...)."""
