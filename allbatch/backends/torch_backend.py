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

Static shapes (default on CUDA): every chunk runs at exactly ``max_batch`` rows, the last partial one
zero-padded into a preallocated input. One input shape means cuDNN's autotuner (``cudnn.benchmark``)
tunes each convolution once, not again for the last partial batch, and one CUDA graph serves every call;
the price is at most ``max_batch - 1`` padded rows per ``infer`` call that ends on a partial chunk.
CUDA graphs (on by default with static shapes, issue 22: the eager forward launches about 710 kernels per
backbone) are captured in ``__enter__`` (before a pipeline starts its producer thread), in
``thread_local`` capture mode so that CUDA calls of other threads (DALI, CuPy) cannot invalidate it.
``torch_compile`` (off by default; the lease measures it) compiles the forward in ``__enter__``, where its
compile time is counted as start-up (``compile_seconds`` in ``describe``).

Overlap (issue 22): on CUDA, ``submit`` queues a chunk on the backend's own stream, with its outputs copied
to page-locked host memory asynchronously, and returns; ``result()`` waits for that copy only. The run's
consumer submits batch k+1 before it writes the rows of batch k. The stream is the backend's own (not the
legacy default stream), so CuPy work of the caller on the default stream (quality control) does not wait
for the network.
NumPy batches are staged through a pinned host buffer and copied to the device asynchronously.

Not thread-safe: one backend instance serves one thread.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from allbatch.backends.base import BaseBackend, InferenceOutput
from allbatch.backends.validate import InvalidBatchError, sample_shape, validate_batch
from allbatch.core.errors import BackendUnavailableError, ModelError, UserInputError
from allbatch.model.manifest import ModelArtifact

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


def use_fp32_reference_math(torch_module: Any) -> Callable[[], None]:
    """Turn TF32 off for cuDNN convolutions and cuBLAS matmuls (fp32 is the reference); returns the undo.

    torch >= 2.9 has per-operation ``fp32_precision`` flags and deprecates the legacy ``allow_tf32`` ones;
    reading a legacy flag after anything set a new one raises RuntimeError, so the new API is used where
    it exists and the legacy flags only on older torch.
    """
    cudnn, matmul = torch_module.backends.cudnn, torch_module.backends.cuda.matmul
    if hasattr(cudnn, "conv") and hasattr(cudnn.conv, "fp32_precision"):
        saved = (cudnn.conv.fp32_precision, matmul.fp32_precision)
        cudnn.conv.fp32_precision = "ieee"
        matmul.fp32_precision = "ieee"

        def restore() -> None:
            cudnn.conv.fp32_precision, matmul.fp32_precision = saved

        return restore
    legacy = (cudnn.allow_tf32, matmul.allow_tf32)
    cudnn.allow_tf32 = matmul.allow_tf32 = False

    def restore_legacy() -> None:
        cudnn.allow_tf32, matmul.allow_tf32 = legacy

    return restore_legacy


@dataclass
class _CapturedGraph:
    """The CUDA graph of ``_forward`` on the static input (device memory)."""

    graph: torch.cuda.CUDAGraph
    static_out: torch.Tensor  # (max_batch, 2C + F) float32 [probs | logits | features], overwritten by each replay


class TorchBackend(BaseBackend):
    """Runs the model with torch (CUDA by default).

    Args:
        artifact: the verified model; weights are read from its ONNX initializers.
        device: "cuda", "cuda:N" or "cpu" (CPU only when asked explicitly).
        precision: "fp16" (weights and activations half, softmax float32) or "fp32" (TF32 disabled,
            the reference).
        channels_last: NHWC memory layout for the (2N, 3, S, S) backbone input and the weights.
        cuda_graphs: capture one CUDA graph (on the static input, in ``__enter__``) and replay it; None: on
            with static shapes on CUDA, off otherwise.
        torch_compile: run the forward through ``torch.compile`` (compiled in ``__enter__``).
        max_batch: the largest batch run at once; bigger inputs are split into chunks of this size.
        static_shapes: run every chunk at ``max_batch`` rows, zero-padding a partial one (see the module
            docstring); None: on for CUDA, off for the CPU. CUDA graphs need it.
    """

    name = "torch"
    accepts_device_arrays = True

    def __init__(
        self,
        artifact: ModelArtifact,
        device: str = "cuda",
        precision: Precision = "fp16",
        channels_last: bool = True,
        cuda_graphs: bool | None = None,
        max_batch: int = 256,
        static_shapes: bool | None = None,
        torch_compile: bool = False,
    ) -> None:
        if precision not in ("fp16", "fp32"):
            raise UserInputError(f"torch: precision must be fp16 or fp32, got {precision!r}")
        if not _DEVICE.fullmatch(device):
            raise UserInputError(f"torch: device must be 'cuda', 'cuda:N' or 'cpu', got {device!r}")
        if max_batch < 1:
            raise UserInputError(f"torch: max_batch must be at least 1, got {max_batch}")
        if cuda_graphs and device == "cpu":
            raise UserInputError("torch: CUDA graphs need a CUDA device")
        if cuda_graphs and static_shapes is False:
            raise UserInputError("torch: CUDA graphs replay one fixed input shape; they need static_shapes")
        super().__init__(artifact, max_batch)
        self.requested_device = device
        self.precision: Precision = precision
        self.channels_last = channels_last
        self.max_batch: int = max_batch
        self.static_shapes = static_shapes if static_shapes is not None else device != "cpu"
        self.cuda_graphs = cuda_graphs if cuda_graphs is not None else (self.static_shapes and device != "cpu")
        self.torch_compile = torch_compile
        self.compile_seconds: float | None = None
        """Seconds the first compiled forward took in ``__enter__`` (compilation included); None without compile."""
        self.device = device
        """Human-readable device; the GPU's name once entered."""
        self.padded_rows = 0
        """Zero rows run to fill partial chunks up to ``max_batch`` (static shapes), since ``__enter__``."""
        self._net: TwoChannelNet | None = None
        self._torch_device: torch.device | None = None
        self._static_in: torch.Tensor | None = None  # (max_batch, 2, 3, S, S) float32 on the device
        self._graph: _CapturedGraph | None = None
        self._pinned: torch.Tensor | None = None  # (max_batch, 2, 3, S, S) float32, page-locked host memory
        self._staged: torch.cuda.Event | None = None  # the last copy out of ``_pinned``
        self._restore_flags: list[Callable[[], None]] = []
        self._stream: torch.cuda.Stream | None = None  # the backend's own CUDA stream
        self._forward_fn: Callable[[torch.Tensor], torch.Tensor] = self._forward  # torch.compile'd when asked

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
        self.padded_rows = 0
        net = load_torch_model(self.artifact)
        net = net.to(device=target, dtype=torch.float16 if self.precision == "fp16" else torch.float32)
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self._net = net
        self._torch_device = target
        if self.static_shapes:
            self._static_in = torch.zeros((self.max_batch, *sample_shape(self.artifact.manifest)), dtype=torch.float32, device=target)
        self._forward_fn = torch.compile(self._forward, dynamic=False) if self.torch_compile else self._forward
        if target.type == "cuda":
            try:
                self._enter_cuda(torch, target)
            except BaseException:
                self._release()
                raise
        elif self.torch_compile:
            self._compile_now(torch)
        log.debug(
            "torch backend on %s: %s, channels_last=%s, cuda_graphs=%s, compile=%s",
            self.device,
            self.precision,
            self.channels_last,
            self.cuda_graphs,
            self.torch_compile,
        )

    def _compile_now(self, torch: Any) -> None:
        """Run the compiled forward once on a full batch of zeros, so compilation is start-up; time it."""
        import time

        device = self._torch_device
        assert device is not None  # set by _load
        example = self._static_in
        if example is None:
            example = torch.zeros((self.max_batch, *sample_shape(self.artifact.manifest)), dtype=torch.float32, device=device)
        began = time.perf_counter()
        with torch.inference_mode():
            self._forward_fn(example)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.compile_seconds = time.perf_counter() - began
        log.info("torch.compile: first forward (compilation included) took %.1f s", self.compile_seconds)

    def _enter_cuda(self, torch: Any, device: torch.device) -> None:
        """Global flags (restored by ``_release``), the pinned staging buffer and the CUDA graph."""
        benchmark = torch.backends.cudnn.benchmark
        self._restore_flags.append(lambda: setattr(torch.backends.cudnn, "benchmark", benchmark))
        # With static shapes every convolution sees one input shape, so cuDNN autotuning runs once per layer.
        torch.backends.cudnn.benchmark = self.static_shapes
        if self.precision == "fp32":
            self._restore_flags.append(use_fp32_reference_math(torch))
        self._pinned = torch.empty((self.max_batch, *sample_shape(self.artifact.manifest)), dtype=torch.float32, pin_memory=True)
        self._staged = torch.cuda.Event()
        self._stream = torch.cuda.Stream(device=device)
        self.submits_async = True
        with torch.cuda.device(device):
            if self.torch_compile:
                self._compile_now(torch)  # before the capture: a graph replays compiled kernels, never compiles
            if self.cuda_graphs:
                with torch.inference_mode():
                    self._graph = self._capture()
        # The static input and the weights were written on the default stream; the backend's stream has no
        # implicit order with it, so finish that work once here.
        torch.cuda.synchronize(device)

    def _release(self) -> None:
        import torch

        on_cuda = self._torch_device is not None and self._torch_device.type == "cuda"
        if on_cuda and self._staged is not None:
            self._staged.synchronize()  # the pinned buffer may still be read by a copy
        self._graph = None
        self._stream = None
        self.submits_async = False
        self._forward_fn = self._forward
        self._static_in = None
        self._pinned = None
        self._staged = None
        self._net = None
        self._torch_device = None
        while self._restore_flags:
            self._restore_flags.pop()()
        if on_cuda:
            torch.cuda.empty_cache()  # give the weights, activations and graph pool back to the driver

    # -- inference --------------------------------------------------------------------------------

    def _call_context(self) -> contextlib.AbstractContextManager[Any]:
        """Inference mode on this backend's CUDA device (or the CPU) around one ``infer`` call."""
        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        device = self._torch_device
        if device is not None and device.type == "cuda":
            stack.enter_context(torch.cuda.device(device))
            if self._stream is not None:
                stack.enter_context(torch.cuda.stream(self._stream))
        return stack

    def _from_host(self, batch: np.ndarray[Any, Any]) -> torch.Tensor:
        """A validated NumPy batch as a host tensor (each chunk goes to the device through ``_to_device``)."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(batch))

    def _infer_chunk(self, x: Any) -> InferenceOutput:
        """One chunk of at most ``max_batch`` rows -> host outputs (a synchronising copy: final when returned)."""
        chunk = self._to_device(x)
        packed = self._run_static(chunk) if self.static_shapes else self._forward_fn(chunk)
        return InferenceOutput.from_packed(packed.to("cpu").numpy(), len(self.artifact.manifest.class_names))

    def _launch_chunk(self, x: Any) -> Callable[[], InferenceOutput]:
        """On CUDA: queue one chunk and an asynchronous copy of its outputs to page-locked host memory on the
        backend's stream, and return a finisher that waits for that copy only (see the module docstring)."""
        device = self._torch_device
        if device is None or device.type != "cuda":
            return super()._launch_chunk(x)
        import torch

        chunk = self._to_device(x)
        packed = self._run_static(chunk) if self.static_shapes else self._forward_fn(chunk)
        host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
        host.copy_(packed, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()  # on the current stream: the backend's, inside _call_context
        classes = len(self.artifact.manifest.class_names)

        def finish() -> InferenceOutput:
            copied.synchronize()
            return InferenceOutput.from_packed(host.numpy(), classes)

        return finish

    def _to_device(self, chunk: torch.Tensor) -> torch.Tensor:
        """A chunk on the backend's device; host data goes through the pinned buffer, asynchronously."""
        device = self._torch_device
        assert device is not None  # set by __enter__, checked by infer
        if chunk.device == device or self._pinned is None or self._staged is None:
            return chunk.to(device)
        rows = int(chunk.shape[0])
        self._staged.synchronize()  # the previous chunk's copy out of the pinned buffer has finished
        staged = self._pinned[:rows]
        staged.copy_(chunk)
        on_device = staged.to(device, non_blocking=True)
        self._staged.record()
        return on_device

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
        logits = net.forward_head(net.head_inputs(x, features)).float() / self.artifact.manifest.temperature
        return torch.cat([torch.softmax(logits, dim=1), logits, features.float()], dim=1)

    def _run_static(self, x: torch.Tensor) -> torch.Tensor:
        """``_forward`` at the static shape: copy into the static input, zero-pad, run (or replay), real rows out.

        (m, 2, 3, S, S) float32 on the device, m <= max_batch -> (m, 2C + F) float32 on the device (see ``_forward``).
        """
        static_in = self._static_in
        assert static_in is not None  # allocated by __enter__ when static_shapes
        m = int(x.shape[0])
        static_in[:m].copy_(x)
        if m < self.max_batch:
            static_in[m:].zero_()  # padding rows: finite values; rows are independent in eval mode
            self.padded_rows += self.max_batch - m
        if self._graph is None:
            return self._forward_fn(static_in)[:m]
        self._graph.graph.replay()
        return self._graph.static_out[:m].clone()  # the next replay overwrites static_out

    def _capture(self) -> _CapturedGraph:
        """Capture ``_forward`` on the static input, following torch's documented recipe.

        The warm-up runs on a side stream also do cuDNN's autotuning and the allocator's growth outside
        the graph. ``thread_local`` capture mode: only this thread's CUDA calls are checked during capture,
        so a producer thread's DALI or CuPy work cannot invalidate it. One graph, so one private memory pool.
        """
        import torch

        device, static_in = self._torch_device, self._static_in
        assert device is not None and static_in is not None  # set by __enter__
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(GRAPH_WARMUP_RUNS):
                self._forward_fn(static_in)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = self._forward_fn(static_in)
        log.debug("captured a CUDA graph for batch size %d", self.max_batch)
        return _CapturedGraph(graph=graph, static_out=static_out)

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
            "torch_compile": self.torch_compile,
            "compile_seconds": None if self.compile_seconds is None else round(self.compile_seconds, 2),
            "max_batch": self.max_batch,
            "static_shapes": self.static_shapes,
            "padded_rows": self.padded_rows,
        }
        if self._torch_device is not None and self._torch_device.type == "cuda":
            major, minor = torch.cuda.get_device_capability(self._torch_device)
            details["cuda_version"] = torch.version.cuda
            details["cudnn_version"] = torch.backends.cudnn.version()
            details["compute_capability"] = f"{major}.{minor}"
        return details
