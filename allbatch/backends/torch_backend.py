"""torch on CUDA: the committed ONNX's own weights rebuilt as ``TwoChannelNet`` (no second artifact).

fp16 (default) or fp32 compute, channels_last backbone input, optional CUDA graphs. ``device="cpu"``
exists for parity tests and is used only when asked for; a missing GPU is an error, never a fallback.

Streams: all work is queued on torch's *current* CUDA stream of the calling thread, and the
probabilities are copied to the host with a synchronising copy. A CUDA input (a CuPy array, a torch
tensor, anything with ``__dlpack__`` or ``__cuda_array_interface__``) is used in place, without a host
copy. It must be complete with respect to that stream:

- CuPy arrays go through DLPack, and CuPy then makes torch's stream wait on CuPy's *current* stream in
  the calling thread, so data produced on that stream needs nothing more.
- Data produced on another CuPy stream (for example in a producer thread) must be finished first: call
  ``that_stream.synchronize()`` before ``infer``, or run ``infer`` inside
  ``with torch.cuda.stream(torch.cuda.ExternalStream(that_stream.ptr)):`` so both use the same stream.
- ``__cuda_array_interface__`` objects without DLPack are read as they are: synchronise their stream first.

Not thread-safe: one backend instance serves one thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from allbatch.backends.base import BaseBackend, InferenceOutput
from allbatch.backends.validate import InvalidBatchError, sample_shape, validate_batch
from allbatch.errors import BackendUnavailableError, ModelError, UserInputError
from allbatch.manifest import ModelArtifact

if TYPE_CHECKING:
    import torch

    from allbatch.model.network import TwoChannelNet

log = logging.getLogger("allbatch.backends")

Precision = Literal["fp16", "fp32"]
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")
GRAPH_WARMUP_RUNS = 3
"""Eager runs on a side stream before a capture: cuDNN autotuning and allocator growth happen outside the graph."""


def torch_cuda_status() -> tuple[bool, str]:
    """(torch can run on a CUDA GPU?, why or why not). Imports torch; does not create a CUDA context."""
    try:
        import torch
    except ImportError:
        return False, "torch not installed (pip install torch)"
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda} build" if torch.version.cuda else "CPU-only build"
        return False, f"torch {torch.__version__} installed ({build}) but CUDA not available"
    return True, f"torch {torch.__version__} on CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)"


def load_torch_model(artifact: ModelArtifact) -> TwoChannelNet:
    """``TwoChannelNet`` built from ``manifest.architecture`` with the ONNX initializers as weights.

    Returns the network in eval mode, float32, on the host.

    Raises:
        ModelError: the architecture or the weights do not fit the network.
    """
    from allbatch.model.config import ModelConfig
    from allbatch.model.onnx_io import load_network

    path = artifact.onnx_path
    try:
        ModelConfig.from_dict(artifact.manifest.architecture)
    except (KeyError, TypeError) as exc:
        raise ModelError(f"{path}: manifest architecture is not a ModelConfig: {exc}") from exc
    try:
        return load_network(path, artifact.manifest.architecture)
    except KeyError as exc:
        raise ModelError(f"{path}: weights do not fit the manifest's architecture: {exc.args[0]}") from exc


def graph_batch_size(n: int, max_batch: int) -> int:
    """The captured batch size that serves ``n`` rows: the next power of two, at most ``max_batch``.

    Keeps the number of CUDA graphs at about log2(max_batch) whatever the partial batch sizes.
    """
    size = 1
    while size < n:
        size *= 2
    return min(size, max_batch)


@dataclass
class _CapturedGraph:
    """One CUDA graph for a fixed batch size and its static buffers (device memory)."""

    graph: torch.cuda.CUDAGraph
    static_in: torch.Tensor  # (size, 2, 3, S, S) float32: rows past the real batch are zero padding
    static_out: torch.Tensor  # (size, 2C + F) float32 [probs | logits | features], overwritten by each replay


class TorchBackend(BaseBackend):
    """Runs the model with torch (CUDA by default).

    Args:
        artifact: the verified model; weights are read from its ONNX initializers.
        device: "cuda", "cuda:N" or "cpu" (CPU only when asked explicitly).
        precision: "fp16" (weights and activations half, softmax float32) or "fp32" (TF32 disabled,
            the reference).
        channels_last: NHWC memory layout for the (2N, 3, S, S) backbone input and the weights.
        cuda_graphs: capture one CUDA graph per batch size bucket (see ``graph_batch_size``) and
            replay it; partial batches are zero-padded into the static input, only real rows return.
        max_batch: the largest batch run at once; bigger inputs are split into chunks of this size.
    """

    name = "torch"
    accepts_device_arrays = True

    def __init__(
        self,
        artifact: ModelArtifact,
        device: str = "cuda",
        precision: Precision = "fp16",
        channels_last: bool = True,
        cuda_graphs: bool = False,
        max_batch: int = 256,
    ) -> None:
        if precision not in ("fp16", "fp32"):
            raise UserInputError(f"torch: precision must be fp16 or fp32, got {precision!r}")
        if not _DEVICE.fullmatch(device):
            raise UserInputError(f"torch: device must be 'cuda', 'cuda:N' or 'cpu', got {device!r}")
        if max_batch < 1:
            raise UserInputError(f"torch: max_batch must be at least 1, got {max_batch}")
        if cuda_graphs and device == "cpu":
            raise UserInputError("torch: CUDA graphs need a CUDA device")
        self.artifact = artifact
        self.requested_device = device
        super().__init__(artifact, max_batch)
        self.max_batch: int = max_batch
        self.precision: Precision = precision
        self.channels_last = channels_last
        self.cuda_graphs = cuda_graphs
        self.device = device
        """Human-readable device; the GPU's name once entered."""
        self._net: TwoChannelNet | None = None
        self._torch_device: torch.device | None = None
        self._graphs: dict[int, _CapturedGraph] = {}
        self._saved_flags: tuple[bool, bool] | None = None

    # -- lifetime ---------------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            import torch
        except ImportError as exc:
            raise BackendUnavailableError("torch backend: torch not installed (pip install torch)") from exc
        target = torch.device(self.requested_device)
        if target.type == "cuda":
            usable, reason = torch_cuda_status()
            if not usable:
                raise BackendUnavailableError(f"torch backend: {reason}")
            index = target.index if target.index is not None else torch.cuda.current_device()
            if index >= torch.cuda.device_count():
                raise BackendUnavailableError(f"torch backend: no CUDA device {index} ({torch.cuda.device_count()} visible)")
            target = torch.device("cuda", index)
            self.device = torch.cuda.get_device_name(target)
        else:
            self.device = f"cpu ({os.cpu_count() or 1} cores)"
        net = load_torch_model(self.artifact)
        net = net.to(device=target, dtype=torch.float16 if self.precision == "fp16" else torch.float32)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        if target.type == "cuda":
            # Global flags, set last so that a failed __enter__ leaves them alone; __exit__ restores them.
            # cuDNN autotuning pays off for the few fixed batch shapes of a run; fp32 is the reference, so no TF32.
            self._saved_flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32)
            torch.backends.cudnn.benchmark = True
            if self.precision == "fp32":
                torch.backends.cudnn.allow_tf32 = False
        self._net = net
        self._torch_device = target
        log.debug(
            "torch backend on %s: %s, channels_last=%s, cuda_graphs=%s", self.device, self.precision, self.channels_last, self.cuda_graphs
        )

    def _release(self) -> None:
        import torch

        on_cuda = self._torch_device is not None and self._torch_device.type == "cuda"
        self._graphs.clear()
        self._net = None
        self._torch_device = None
        if self._saved_flags is not None:
            torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = self._saved_flags
            self._saved_flags = None
        if on_cuda:
            torch.cuda.empty_cache()  # give the weights, activations and graph pools back to the driver

    # -- inference --------------------------------------------------------------------------------

    def _call_context(self) -> contextlib.AbstractContextManager[Any]:
        """Inference mode on this backend's CUDA device (or the CPU) around one ``infer`` call."""
        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        device = self._torch_device
        if device is not None and device.type == "cuda":
            stack.enter_context(torch.cuda.device(device))
        return stack

    def _from_host(self, batch: np.ndarray[Any, Any]) -> torch.Tensor:
        """A validated NumPy batch as a host tensor (each chunk is copied to the device in ``_infer_chunk``)."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(batch))

    def _from_device(self, batch: Any) -> torch.Tensor:
        """A validated float32 (N, 2, 3, S, S) tensor where the data is (a CUDA array is used in place; see the
        module docstring for stream rules)."""
        import torch

        manifest = self.artifact.manifest
        if isinstance(batch, torch.Tensor):
            tensor = batch
        elif hasattr(batch, "__dlpack__"):
            tensor = torch.from_dlpack(batch)  # passes torch's current stream to the producer (DLPack protocol)
        elif hasattr(batch, "__cuda_array_interface__"):
            tensor = torch.as_tensor(batch, device=self._torch_device)
        else:
            raise InvalidBatchError(
                f"torch: unsupported batch type {type(batch).__module__}.{type(batch).__name__} "
                "(a NumPy array, a torch tensor, or a CUDA array with DLPack / __cuda_array_interface__)"
            )
        validate_batch(tuple(tensor.shape), str(tensor.dtype), manifest, self.name)
        if tensor.device.type == "cuda" and tensor.device != self._torch_device:
            raise InvalidBatchError(f"torch: batch is on {tensor.device}, the backend runs on {self._torch_device}")
        return tensor

    def _infer_chunk(self, x: Any) -> InferenceOutput:
        """One chunk of at most ``max_batch`` rows -> host outputs (a synchronising copy: final when returned)."""
        chunk = x.to(self._torch_device)
        packed = self._run_graph(chunk) if self.cuda_graphs else self._forward(chunk)
        return InferenceOutput.from_packed(packed.to("cpu").numpy(), len(self.artifact.manifest.class_names))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, 2, 3, S, S) float32 on the device -> (n, 2C + F) float32 ``[probs | logits | features]`` on the
        device (one tensor, so a CUDA graph keeps one static output; ``InferenceOutput.from_packed`` splits it)."""
        import torch

        net = self._net
        assert net is not None  # set by __enter__, checked by infer
        n = x.shape[0]
        # The same flatten as TwoChannelNet.forward_features (rows alternate original / segmented), with
        # the cast and the NHWC layout applied to the (2n, 3, S, S) backbone input in one copy.
        flat = x.flatten(0, 1).to(
            dtype=next(net.parameters()).dtype,
            memory_format=torch.channels_last if self.channels_last else torch.contiguous_format,
        )
        features = net.backbone(flat).reshape(n, -1)
        logits = net.forward_head(features).float() / self.artifact.manifest.temperature
        return torch.cat([torch.softmax(logits, dim=1), logits, features.float()], dim=1)

    def _run_graph(self, x: torch.Tensor) -> torch.Tensor:
        """``_forward`` through a CUDA graph: copy into the static input, replay, copy the real rows out."""
        m = int(x.shape[0])
        size = graph_batch_size(m, self.max_batch)
        captured = self._graphs.get(size)
        if captured is None:
            captured = self._capture(size)
            self._graphs[size] = captured
        captured.static_in[:m].copy_(x)
        if m < size:
            captured.static_in[m:].zero_()  # padding rows: finite values; rows are independent in eval mode
        captured.graph.replay()
        return captured.static_out[:m].clone()  # the next replay overwrites static_out

    def _capture(self, size: int) -> _CapturedGraph:
        """Capture ``_forward`` for a (size, 2, 3, S, S) batch, following torch's documented recipe."""
        import torch

        device = self._torch_device
        assert device is not None  # set by __enter__, checked by infer
        static_in = torch.zeros((size, *sample_shape(self.artifact.manifest)), dtype=torch.float32, device=device)
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_RUNS):
                self._forward(static_in)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = self._forward(static_in)
        log.debug("captured a CUDA graph for batch size %d", size)
        return _CapturedGraph(graph=graph, static_in=static_in, static_out=static_out)

    def describe(self) -> dict[str, Any]:
        """Provenance: torch / CUDA / cuDNN versions, device, precision and execution options."""
        import torch

        details: dict[str, Any] = {
            "backend": self.name,
            "torch_version": torch.__version__,
            "device": self.device,
            "precision": self.precision,
            "channels_last": self.channels_last,
            "cuda_graphs": self.cuda_graphs,
            "max_batch": self.max_batch,
        }
        if self._torch_device is not None and self._torch_device.type == "cuda":
            major, minor = torch.cuda.get_device_capability(self._torch_device)
            details["cuda_version"] = torch.version.cuda
            details["cudnn_version"] = torch.backends.cudnn.version()
            details["compute_capability"] = f"{major}.{minor}"
        return details
