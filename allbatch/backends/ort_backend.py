"""ONNX Runtime on the CPU: the portable backend (the GPU paths are torch and TensorRT).

ONNX Runtime computes in float32; the fp16-stored weights are cast once when the session is created
(the Cast nodes are constant-folded by graph optimisation).
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from allbatch.backends.base import BaseBackend, InferenceOutput
from allbatch.core.errors import ModelError, UserInputError
from allbatch.model.manifest import ModelArtifact

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger("allbatch.backends")

PROVIDER = "CPUExecutionProvider"


class OnnxRuntimeBackend(BaseBackend):
    """Runs the model artifact with ONNX Runtime's CPU execution provider.

    Args:
        artifact: the verified model (ONNX path + manifest).
        threads: intra-op threads; ``None`` lets ONNX Runtime use every core.
        max_batch: the largest chunk run at once; ``None`` runs every batch whole.
    """

    name = "onnxruntime"

    def __init__(self, artifact: ModelArtifact, threads: int | None = None, max_batch: int | None = None) -> None:
        if threads is not None and threads < 1:
            raise UserInputError(f"onnxruntime: threads must be at least 1, got {threads}")
        super().__init__(artifact, max_batch)
        self.threads = threads
        self._session: onnxruntime.InferenceSession | None = None

    def _load(self) -> None:
        import onnxruntime as ort
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        manifest = self.artifact.manifest
        try:
            session = ort.InferenceSession(str(self.artifact.onnx_path), sess_options=options, providers=[PROVIDER])
        except (Fail, InvalidArgument, InvalidGraph, InvalidProtobuf, NoSuchFile) as exc:  # e.g. an opset newer than this onnxruntime
            raise ModelError(f"onnxruntime cannot load {self.artifact.onnx_path}: {exc}") from exc
        inputs = [node.name for node in session.get_inputs()]
        outputs = [node.name for node in session.get_outputs()]
        if inputs != [manifest.input_name] or outputs != manifest.output_names:
            raise ModelError(
                f"{self.artifact.onnx_path}: graph inputs {inputs} / outputs {outputs} differ from the manifest "
                f"({manifest.input_name!r} -> {manifest.output_names})"
            )
        self._session = session
        log.debug("onnxruntime %s session on %s, providers %s", ort.__version__, self.device, session.get_providers())

    def _release(self) -> None:
        self._session = None  # the session frees its arena when the last reference goes

    def _infer_chunk(self, x: Any) -> InferenceOutput:
        """(n, 2, 3, S, S) float32 C-contiguous host array -> probs, logits (n, C) and features (n, F) on the host."""
        assert self._session is not None  # set by _load; infer checks the `with` block
        manifest = self.artifact.manifest
        probs, logits, features = self._session.run(manifest.output_names, {manifest.input_name: x})
        return InferenceOutput(*(np.asarray(array, dtype=np.float32) for array in (probs, logits, features)))

    def describe(self) -> dict[str, Any]:
        """Provenance: onnxruntime version, execution providers, threads, graph optimisation level."""
        import onnxruntime as ort

        providers = self._session.get_providers() if self._session is not None else [PROVIDER]
        return {
            "backend": self.name,
            "onnxruntime_version": ort.__version__,
            "providers": providers,
            "threads": self.threads if self.threads is not None else f"default ({os.cpu_count() or 1} cores)",
            "graph_optimization": "ORT_ENABLE_ALL",
            "max_batch": self.max_batch,
            "compute_precision": "fp32",
        }
