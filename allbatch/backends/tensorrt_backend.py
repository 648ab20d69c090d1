"""TensorRT on a CUDA GPU: an engine built from the model's ONNX and cached per machine (see ``trt_engine``).

Device memory and streams belong to CuPy (pycuda is deliberately not used: CuPy is already the pipeline's
GPU array library, so batches arrive as CuPy arrays and one memory pool serves both). The engine runs with
TensorRT 10's name-based API: ``set_input_shape`` + ``set_tensor_address`` + ``execute_async_v3`` on the
backend's own CuPy stream.

Streams: ``infer`` makes its stream wait for the caller's *current* CuPy stream (an event, no host wait), so a
CuPy batch produced on that stream needs nothing more; a batch produced on another stream must be finished
first (the DALI preparer synchronises before it returns). The probabilities are copied to the host with a
synchronising copy, so they are final when ``infer`` returns.

FP16: an fp16 engine is used only once it agrees with the fp32 reference (ONNX Runtime on the CPU) on real
images (``fp16_check``); the figures are stored beside the cached engine and checked again only when asked.
Not thread-safe: one backend instance serves one thread. ``tensorrt`` and ``cupy`` are imported lazily.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from allbatch.backends.base import BaseBackend, InferenceOutput
from allbatch.backends.fp16_check import (
    DEFAULT_CHECK_IMAGES,
    FP16_MAX_ABS_PROB_DIFF,
    FP16_MIN_ARGMAX_AGREEMENT,
    check_inputs_from_folder,
    fp16_agreement,
    judge_fp16,
    reference_probs,
)
from allbatch.backends.trt_engine import (
    EngineKey,
    Precision,
    default_cache_dir,
    engine_device_memory_bytes,
    engine_paths,
    load_or_build_engine,
    read_sidecar,
    record_fp16_agreement,
    require_tensorrt,
    tensorrt_logger,
)
from allbatch.backends.validate import InvalidBatchError, sample_shape, validate_batch
from allbatch.core.errors import BackendUnavailableError, ModelError, UserInputError
from allbatch.environment.gpu_probe import CUPY_INSTALL_HINT
from allbatch.model.manifest import ModelArtifact

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger("allbatch.backends")

TENSOR_ALIGNMENT = 256
"""Bytes: TensorRT requires I/O tensor addresses aligned to 256 (CuPy's own allocations are)."""


def tensorrt_status() -> tuple[bool, str]:
    """(can the TensorRT backend run here?, why or why not): tensorrt and cupy importable, a CUDA device present.

    Creates no CUDA context (only counts devices).
    """
    try:
        version = require_tensorrt()
    except BackendUnavailableError as exc:
        return False, str(exc)
    try:
        import cupy
    except ImportError:
        return False, f"tensorrt {version} installed, but cupy is not (the backend keeps buffers and streams in CuPy; {CUPY_INSTALL_HINT})"
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
    except cupy.cuda.runtime.CUDARuntimeError as exc:
        return False, f"tensorrt {version} installed, but CUDA reports no usable device ({exc})"
    if count == 0:
        return False, f"tensorrt {version} installed, but there is no CUDA device"
    return True, f"tensorrt {version} with cupy {cupy.__version__}, {count} CUDA device(s)"


def numpy_dtype(dtype: trt.DataType) -> type[np.floating[Any]]:
    """NumPy type of a TensorRT I/O tensor type; only float32 and float16 I/O are supported.

    Raises:
        ModelError: any other I/O type.
    """
    import tensorrt as trt

    if dtype == trt.DataType.FLOAT:
        return np.float32
    if dtype == trt.DataType.HALF:
        return np.float16
    raise ModelError(f"TensorRT engine I/O type {dtype} is not supported (float32 or float16)")


class TensorRTBackend(BaseBackend):
    """Runs the model with a TensorRT engine on one CUDA GPU.

    Args:
        artifact: the verified model; the engine is built from its ONNX.
        precision: "fp16" (default; accepted only after the agreement check) or "fp32" (TF32 off: the reference).
        max_batch: the optimisation profile's largest batch (and its opt batch); bigger inputs are run in chunks.
        cache_dir: engine cache (``trt_engine.default_cache_dir()`` when None).
        check_images: folder of real images for the fp16 agreement check. When given, the check always runs
            (and its figures replace the stored ones); when None, stored figures are used, or the check runs
            on the shipped demo images.
        device_id: CUDA device ordinal.
    """

    name = "tensorrt"
    accepts_device_arrays = True

    def __init__(
        self,
        artifact: ModelArtifact,
        *,
        precision: str = "fp16",
        max_batch: int = 256,
        cache_dir: Path | None = None,
        check_images: Path | None = None,
        device_id: int = 0,
    ) -> None:
        if precision not in ("fp16", "fp32"):
            raise UserInputError(f"tensorrt: precision must be fp16 or fp32, got {precision!r}")
        if max_batch < 1:
            raise UserInputError(f"tensorrt: max_batch must be at least 1, got {max_batch}")
        if device_id < 0:
            raise UserInputError(f"tensorrt: device_id must be >= 0, got {device_id}")
        super().__init__(artifact, max_batch)
        self.max_batch: int = max_batch
        self.precision: Precision = "fp16" if precision == "fp16" else "fp32"
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        self.check_images = check_images
        self.device_id = device_id
        self.device = f"cuda:{device_id}"
        """Human-readable device; the GPU's name once entered."""
        self.key: EngineKey | None = None
        self.fp16_figures: dict[str, Any] | None = None
        self._num_classes = len(artifact.manifest.class_names)
        self._tensorrt_version = ""
        self._cupy: Any = None
        self._cuda_device: Any = None  # cupy.cuda.Device
        self._stream: Any = None  # cupy.cuda.Stream
        self._outputs: dict[str, Any] = {}  # output name -> cupy.ndarray (max_batch, width) in the engine's output dtype
        self._logger: trt.ILogger | None = None
        self._runtime: trt.Runtime | None = None
        self._engine: trt.ICudaEngine | None = None
        self._context: trt.IExecutionContext | None = None
        self._input_dtype: type[np.floating[Any]] = np.float32

    # -- lifetime ---------------------------------------------------------------------------------

    def _load(self) -> None:
        usable, reason = tensorrt_status()
        if not usable:
            raise BackendUnavailableError(f"tensorrt backend: {reason}")
        import cupy

        self._cupy = cupy
        try:
            self._cuda_device = cupy.cuda.Device(self.device_id)
            with self._cuda_device:
                self._open()
        except BaseException:
            self._release()
            raise

    def _accept(self) -> None:
        """The fp16 agreement gate (``_accept_fp16``); an fp32 engine is the reference."""
        if self.precision == "fp16":
            with self._cuda_device:
                self._accept_fp16()

    def _open(self) -> None:
        """Engine (cached or built), execution context, stream and output buffer on the current device."""
        import tensorrt as trt

        cupy = self._cupy
        count = cupy.cuda.runtime.getDeviceCount()
        if self.device_id >= count:
            raise BackendUnavailableError(f"tensorrt backend: no CUDA device {self.device_id} ({count} visible)")
        props = cupy.cuda.runtime.getDeviceProperties(self.device_id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        self.device = name
        self._tensorrt_version = str(trt.__version__)
        self.key = EngineKey(
            onnx_sha256=self.artifact.sha256,
            tensorrt_version=self._tensorrt_version,
            gpu_name=name,
            compute_capability=f"{props['major']}.{props['minor']}",
            precision=self.precision,
            min_batch=1,
            opt_batch=self.max_batch,  # a run sends full batches; only the last one is partial
            max_batch=self.max_batch,
        )
        self._logger = tensorrt_logger()
        runtime = trt.Runtime(self._logger)
        self._runtime = runtime
        validated: list[trt.ICudaEngine] = []

        def deserialises(data: bytes) -> bool:
            try:
                engine = runtime.deserialize_cuda_engine(data)
            except RuntimeError as exc:  # some TensorRT versions raise instead of returning None
                log.warning("TensorRT could not deserialise the engine: %s", exc)
                return False
            if engine is None:
                return False
            validated[:] = [engine]  # keep it: the caller would otherwise deserialise the same bytes again
            return True

        load_or_build_engine(self.artifact, self.key, self.cache_dir, validate=deserialises)
        engine = validated[-1]
        self._engine = engine
        self._check_io(engine)
        context = engine.create_execution_context()
        if context is None:
            raise BackendUnavailableError(f"tensorrt backend: cannot create an execution context on {name} (out of GPU memory?)")
        self._context = context
        manifest = self.artifact.manifest
        self._input_dtype = numpy_dtype(engine.get_tensor_dtype(manifest.input_name))
        self._stream = cupy.cuda.Stream(non_blocking=True)
        widths = {"probs": self._num_classes, "logits": self._num_classes, "features": manifest.num_features}
        self._outputs = {
            name: cupy.empty((self.max_batch, widths[name]), dtype=numpy_dtype(engine.get_tensor_dtype(name)))
            for name in manifest.output_names
        }
        log.debug(
            "tensorrt %s engine on %s: %s, input %s, context memory %.1f MiB",
            self._tensorrt_version,
            name,
            self.key.describe(),
            np.dtype(self._input_dtype).name,
            engine_device_memory_bytes(engine) / (1 << 20),
        )

    def _check_io(self, engine: trt.ICudaEngine) -> None:
        """The engine's I/O tensors must be the manifest's one input and its output."""
        import tensorrt as trt

        manifest = self.artifact.manifest
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [name for name in names if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT]
        outputs = [name for name in names if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT]
        if inputs != [manifest.input_name] or sorted(outputs) != sorted(manifest.output_names):  # TensorRT may order outputs its way
            raise ModelError(
                f"TensorRT engine I/O {inputs} -> {outputs} differs from the manifest ({manifest.input_name!r} -> {manifest.output_names})"
            )

    def _release(self) -> None:
        """Free in dependency order: the context uses the engine, the engine the runtime; then CuPy memory."""
        if self._stream is not None:
            self._stream.synchronize()  # nothing of ours may still run on memory about to be freed
        self._context = None
        self._engine = None
        self._runtime = None
        self._logger = None
        self._outputs = {}
        self._stream = None
        if self._cupy is not None and self._cuda_device is not None:
            with self._cuda_device:
                self._cupy.get_default_memory_pool().free_all_blocks()
        self._cuda_device = None

    # -- fp16 acceptance ----------------------------------------------------------------------------

    def _accept_fp16(self) -> None:
        """Use the stored agreement figures of this engine, or measure them; refuse an engine that fails.

        Raises:
            BackendUnavailableError: the fp16 engine disagrees with the fp32 reference beyond the thresholds.
        """
        key = self.key
        assert key is not None  # set by _open
        stored = (read_sidecar(self.cache_dir, key) or {}).get("fp16_agreement")
        if self.check_images is None and isinstance(stored, dict) and {"argmax_agreement", "max_abs_prob_diff", "n"} <= stored.keys():
            figures = stored
            accepted, reason = judge_fp16(stored)  # judged again: the thresholds may have changed since
            log.info("fp16 engine agreement (stored): %s", reason)
        else:
            folder = self.check_images if self.check_images is not None else DEFAULT_CHECK_IMAGES
            inputs = check_inputs_from_folder(folder, self.artifact)
            log.info("fp16 agreement check on %d images from %s against ONNX Runtime fp32", len(inputs), folder)
            figures = fp16_agreement(self.infer(inputs).probs, reference_probs(self.artifact, inputs))
            accepted, reason = judge_fp16(figures)
            figures = {
                **figures,
                "accepted": accepted,
                "reason": reason,
                "check_images": str(folder),
                "reference": "onnxruntime fp32 (CPU)",
                "thresholds": {"min_argmax_agreement": FP16_MIN_ARGMAX_AGREEMENT, "max_abs_prob_diff": FP16_MAX_ABS_PROB_DIFF},
                "checked_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            record_fp16_agreement(self.cache_dir, key, figures)
            log.info("fp16 engine agreement: %s -> %s", reason, "accepted" if accepted else "refused")
        self.fp16_figures = figures
        if not accepted:
            raise BackendUnavailableError(f"tensorrt fp16 engine refused: {reason}; use --precision fp32")

    # -- inference --------------------------------------------------------------------------------

    def _call_context(self) -> Any:
        """This backend's CUDA device, current around one ``infer`` call."""
        return self._cuda_device

    def _from_host(self, batch: np.ndarray[Any, Any]) -> Any:
        """A validated NumPy batch uploaded on the backend's stream (batches above ``max_batch`` run in chunks)."""
        with self._stream:
            return self._cupy.asarray(batch)  # the upload is ordered on our stream

    def _from_device(self, batch: Any) -> Any:
        """A validated float32 (N, 2, 3, S, S) CuPy array on this GPU (used in place), safe to read on the backend's stream."""
        cupy = self._cupy
        manifest = self.artifact.manifest
        if isinstance(batch, cupy.ndarray) or hasattr(batch, "__cuda_array_interface__"):
            array = cupy.asarray(batch)  # zero-copy view for CUDA arrays
        else:
            raise InvalidBatchError(
                f"tensorrt: unsupported batch type {type(batch).__module__}.{type(batch).__name__} "
                "(a NumPy array, or a CuPy / __cuda_array_interface__ array on the GPU)"
            )
        validate_batch(tuple(array.shape), array.dtype.name, manifest, self.name)
        if array.device.id != self.device_id:
            raise InvalidBatchError(f"tensorrt: batch is on cuda:{array.device.id}, the backend runs on cuda:{self.device_id}")
        # The producer's work on the caller's current stream must finish before our stream reads the data.
        self._stream.wait_event(cupy.cuda.get_current_stream().record())
        return array

    def _infer_chunk(self, x: Any) -> InferenceOutput:
        """One chunk of at most ``max_batch`` rows through the engine: (m, 2, 3, S, S) on the device -> host outputs."""
        context = self._context
        assert context is not None  # set by _load; infer checks the `with` block
        cupy = self._cupy
        manifest = self.artifact.manifest
        m = int(x.shape[0])
        with self._stream:
            # Cast (when the engine takes fp16) and make contiguous on our stream, so TensorRT reads finished data.
            tensor = cupy.ascontiguousarray(x, dtype=self._input_dtype)
            if tensor.data.ptr % TENSOR_ALIGNMENT:
                tensor = tensor.copy()  # a view into a caller's array may start anywhere; a fresh allocation is aligned
        if not context.set_input_shape(manifest.input_name, tuple(int(dim) for dim in tensor.shape)):
            raise RuntimeError(
                f"TensorRT refused input shape {tuple(tensor.shape)} (profile 1..{self.max_batch} x {sample_shape(manifest)})"
            )
        context.set_tensor_address(manifest.input_name, int(tensor.data.ptr))
        for name, buffer in self._outputs.items():
            context.set_tensor_address(name, int(buffer.data.ptr))
        if not context.execute_async_v3(int(self._stream.ptr)):
            raise RuntimeError(f"TensorRT execute_async_v3 failed on {self.device}")
        # get() on our stream blocks until the copy (and so the inference) is done; `tensor` stays alive until then.
        host = {name: np.asarray(buffer[:m].get(stream=self._stream), dtype=np.float32) for name, buffer in self._outputs.items()}
        return InferenceOutput(host["probs"], host["logits"], host["features"])

    def describe(self) -> dict[str, Any]:
        """Provenance: TensorRT version, device, precision, engine key and digest, fp16 agreement figures."""
        details: dict[str, Any] = {
            "backend": self.name,
            "tensorrt_version": self._tensorrt_version,
            "device": self.device,
            "precision": self.precision,
            "max_batch": self.max_batch,
            "cache_dir": str(self.cache_dir),
            "memory": "cupy (device buffers and stream)",
        }
        if self.key is not None:
            engine_file, _ = engine_paths(self.cache_dir, self.key)
            details["engine_key"] = self.key.to_dict()
            details["engine_digest"] = self.key.digest()
            details["engine_path"] = str(engine_file)
            details["compute_capability"] = self.key.compute_capability
        if self._engine is not None:
            details["engine_device_memory_bytes"] = engine_device_memory_bytes(self._engine)
            details["input_dtype"] = np.dtype(self._input_dtype).name
        if self.fp16_figures is not None:
            details["fp16_agreement"] = self.fp16_figures
        return details
