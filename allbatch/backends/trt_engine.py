"""TensorRT engines: built from the model's ONNX (``engine_from_onnx``) and cached per machine (``load_or_build_engine``).

An engine is valid only for the ONNX it was built from, the TensorRT version, the GPU model and its compute
capability, the precision and the batch profile: together these form the ``EngineKey``, whose digest names
the cache files ``<digest>.engine`` + ``<digest>.json``. The JSON sidecar holds the key, the sha256 of the
engine bytes and, for fp16 engines, the agreement figures against the fp32 reference. A cached engine whose
sidecar is missing, belongs to another key, or does not match the bytes, or whose bytes TensorRT cannot
deserialise, is refused with a log message and rebuilt. Files are written atomically (temporary file +
``os.replace``) so that a crash or a concurrent build never leaves a half-written engine under its final name.

Written against the TensorRT 10 Python API (name-based I/O tensors, ``build_serialized_network``, memory
pools, timing cache); TensorRT 11 removed the weak-typing precision flags, see ``engine_from_onnx``.
``tensorrt`` is imported only inside the functions that need it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from allbatch.core.atomic_file import write_bytes
from allbatch.core.errors import BackendUnavailableError, ModelError
from allbatch.model.manifest import ModelArtifact

if TYPE_CHECKING:
    import tensorrt as trt

log = logging.getLogger("allbatch.backends")

Precision = Literal["fp16", "fp32"]
KEY_FORMAT = 1
"""Bumped when the way engines are built changes in a way the key fields do not show (new builder options)."""
SIDECAR_FORMAT = 1
DEFAULT_WORKSPACE_BYTES = 4 << 30
"""Memory pool limit for the builder's tactic scratch space (4 GiB): enough for DenseNet201's convolutions,
and it keeps a build from claiming a shared GPU's whole memory (TensorRT's default is all of it)."""
TENSORRT_INSTALL_HINT = "pip install tensorrt-cu13"
MAX_KEPT_ERRORS = 20
"""TensorRT errors the logger keeps for the next exception message (older ones are only in the log)."""


# -- the key -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. ``digest()`` names its cache files."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    """"major.minor", e.g. "9.0" for an H100."""
    precision: Precision
    min_batch: int
    opt_batch: int
    max_batch: int

    def __post_init__(self) -> None:
        if self.precision not in ("fp16", "fp32"):
            raise ValueError(f"EngineKey precision must be fp16 or fp32, got {self.precision!r}")
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"EngineKey needs 1 <= min <= opt <= max batch, got {self.min_batch}/{self.opt_batch}/{self.max_batch}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineKey:
        """Raises KeyError, TypeError or ValueError for a dict that is not a key."""
        return cls(**{field.name: data[field.name] for field in fields(cls)})

    def digest(self) -> str:
        """24 hex digits of the sha256 of the key's canonical JSON (plus ``KEY_FORMAT``): stable across runs
        and Python versions, different for any change of any field."""
        canonical = json.dumps({"key_format": KEY_FORMAT, **self.to_dict()}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:24]

    def describe(self) -> str:
        return (
            f"{self.precision}, batch {self.min_batch}/{self.opt_batch}/{self.max_batch}, TensorRT {self.tensorrt_version}, "
            f"{self.gpu_name} (sm {self.compute_capability}), onnx {self.onnx_sha256[:12]}"
        )


def default_cache_dir() -> Path:
    """``$ALLBATCH_CACHE/engines`` when set, else ``$XDG_CACHE_HOME/allbatch/engines`` (``~/.cache/allbatch/engines``)."""
    root = os.environ.get("ALLBATCH_CACHE")
    if root:
        return Path(root).expanduser() / "engines"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "allbatch" / "engines"


def engine_paths(cache_dir: Path, key: EngineKey) -> tuple[Path, Path]:
    """(``<digest>.engine``, ``<digest>.json``) in ``cache_dir``."""
    digest = key.digest()
    return cache_dir / f"{digest}.engine", cache_dir / f"{digest}.json"


def timing_cache_path(cache_dir: Path, key: EngineKey) -> Path:
    """One timing cache per TensorRT version and GPU model, shared by every engine built there."""
    gpu = "".join(ch if ch.isalnum() else "-" for ch in key.gpu_name).strip("-").lower()
    return cache_dir / f"timing-trt{key.tensorrt_version}-{gpu}-sm{key.compute_capability}.cache"


# -- building --------------------------------------------------------------------------------------


def require_tensorrt() -> str:
    """TensorRT's version, or BackendUnavailableError when the real ``tensorrt`` package cannot be imported.

    Type stubs installed as a plain ``tensorrt/`` folder import as an empty namespace package; they are told
    apart from TensorRT by the missing ``Builder``.
    """
    try:
        import tensorrt
    except ImportError as exc:
        raise BackendUnavailableError(f"tensorrt not installed ({TENSORRT_INSTALL_HINT})") from exc
    except OSError as exc:  # libnvinfer or a CUDA library that cannot be loaded
        raise BackendUnavailableError(f"tensorrt installed but cannot load its libraries: {exc}") from exc
    if not hasattr(tensorrt, "Builder"):
        raise BackendUnavailableError(f"the importable `tensorrt` is not TensorRT (type stubs only?); {TENSORRT_INSTALL_HINT}")
    return str(tensorrt.__version__)


def tensorrt_logger() -> trt.ILogger:
    """The process's one TensorRT logger: forwards to the ``allbatch.backends`` logger and keeps the errors it saw.

    TensorRT treats the logger as a process-wide singleton (its ILogger documentation: multiple Builder and
    Runtime instances must all use the same logger); a second logger handed to a later Builder is ignored,
    so a build's errors would reach only the Runtime's logger. Every allbatch Builder, parser and Runtime
    therefore gets this one. ``take_errors()`` returns and forgets the errors seen so far.
    """
    import tensorrt as trt

    return _logger_for(trt)


@functools.cache
def _logger_for(module: Any) -> trt.ILogger:
    """One logger per imported ``tensorrt`` module (tests swap the module for a stand-in)."""
    base: Any = module.ILogger
    severity = base.Severity

    class _Bridge(base):
        def __init__(self) -> None:
            base.__init__(self)  # pybind11 needs the base initialised explicitly
            self.errors: list[str] = []

        def log(self, level: Any, msg: str) -> None:
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                self.errors.append(msg)
                del self.errors[:-MAX_KEPT_ERRORS]
                log.error("TensorRT: %s", msg)
            elif level == severity.WARNING:
                log.warning("TensorRT: %s", msg)
            elif level == severity.INFO:
                log.debug("TensorRT: %s", msg)

        def take_errors(self) -> list[str]:
            taken, self.errors = self.errors, []
            return taken

    return _Bridge()


def _logged_errors(logger: trt.ILogger) -> str:
    """The last errors the logger saw since the previous call ("no error logged" when none)."""
    errors: list[str] = logger.take_errors() if hasattr(logger, "take_errors") else []
    return "; ".join(errors[-3:]) if errors else "no error logged"


def engine_device_memory_bytes(engine: trt.ICudaEngine) -> int:
    """Device memory an execution context of ``engine`` needs: ``device_memory_size_v2`` (TensorRT >= 10.1, the
    only one left in 11), else ``device_memory_size`` (10.0)."""
    size = getattr(engine, "device_memory_size_v2", None)
    return int(size if size is not None else engine.device_memory_size)


def _dims(values: list[int]) -> trt.Dims:
    import tensorrt as trt

    return trt.Dims(values)


def engine_from_onnx(
    onnx_path: Path,
    key: EngineKey,
    timing_cache: Path | None,
    *,
    input_name: str = "images",
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
) -> bytes:
    """Build a serialised TensorRT engine for ``key`` from the ONNX file.

    One optimisation profile on ``input_name``: (min_batch | opt_batch | max_batch, *sample shape), the sample
    shape read from the parsed network. fp32 clears TF32 (the fp32 engine is a reference, like torch's fp32
    path); fp16 sets TensorRT 10's ``BuilderFlag.FP16`` (weak typing: TensorRT picks fp16 kernels where they
    are faster; I/O stays float32). The timing cache at ``timing_cache`` is loaded when present and saved
    after the build, so later builds on the same GPU skip most kernel timing.

    Why weak typing for fp16, although TensorRT 10.12 deprecated it: every TensorRT 10 release still honours
    the flag (``tensorrt-cu13`` installs 10.13 or later), and a strongly typed build needs the precision in
    the graph, i.e. a second, fp16-typed ONNX (ModelOpt AutoCast or onnxconverter-common) with its own
    verified sha256 in the manifest. The model is still being changed (new outputs), so that artifact is
    left for when it is stable; until then TensorRT 11 refuses fp16 with a clear message (below), and the
    fp16 agreement check guards whatever kernels weak typing picks.

    Raises:
        BackendUnavailableError: TensorRT missing, or TensorRT 11+ asked for fp16 (its weak-typing flags
            are gone; fp16 there needs an fp16-typed ONNX, which allbatch does not ship).
        ModelError: the ONNX does not parse, or its input is not (N, *static sample shape) named ``input_name``.
        RuntimeError: TensorRT failed to build (the message carries TensorRT's last errors).
    """
    require_tensorrt()
    import tensorrt as trt

    logger = tensorrt_logger()
    stale = _logged_errors(logger)  # errors of earlier operations must not be blamed on this build
    if stale != "no error logged":
        log.debug("TensorRT errors before this build (already logged): %s", stale)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch (NetworkDefinitionCreationFlag.EXPLICIT_BATCH is
    # deprecated and ignored), so no creation flag is needed.
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]  # code, node and description
        raise ModelError(f"TensorRT cannot parse {onnx_path}: " + "; ".join(errors or [_logged_errors(logger)]))
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    if [tensor.name for tensor in inputs] != [input_name]:
        raise ModelError(f"{onnx_path}: network inputs {[tensor.name for tensor in inputs]}, expected [{input_name!r}]")
    shape = inputs[0].shape
    sample = [int(shape[i]) for i in range(1, len(shape))]
    if min(sample, default=-1) < 1:
        raise ModelError(f"{onnx_path}: input {input_name} must be (N, fixed sample dims), got {[shape[i] for i in range(len(shape))]}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    if key.precision == "fp16":
        fp16_flag = getattr(trt.BuilderFlag, "FP16", None)
        if fp16_flag is None:
            raise BackendUnavailableError(
                f"TensorRT {trt.__version__} has no BuilderFlag.FP16 (weak typing was removed in TensorRT 11); "
                "build with --precision fp32, or use TensorRT 10"
            )
        config.set_flag(fp16_flag)
    else:
        tf32_flag = getattr(trt.BuilderFlag, "TF32", None)
        if tf32_flag is not None:
            config.clear_flag(tf32_flag)
    profile = builder.create_optimization_profile()
    profile.set_shape(input_name, _dims([key.min_batch, *sample]), _dims([key.opt_batch, *sample]), _dims([key.max_batch, *sample]))
    config.add_optimization_profile(profile)

    if timing_cache is not None:
        blob = timing_cache.read_bytes() if timing_cache.is_file() else b""
        cache = config.create_timing_cache(blob)
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            log.warning("timing cache %s does not fit this TensorRT/GPU; starting an empty one", timing_cache)
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    log.info("building TensorRT engine (%s); the first build on a GPU takes minutes", key.describe())
    started = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT could not build an engine from {onnx_path}: {_logged_errors(logger)}")
    data = bytes(memoryview(serialized))
    log.info("engine built in %.1f s (%.1f MiB)", time.perf_counter() - started, len(data) / (1 << 20))
    if timing_cache is not None:
        write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())), make_parents=True)
    return data


# -- the cache ---------------------------------------------------------------------------------------

BuildFn = Callable[[Path, EngineKey, Path | None], bytes]
"""(onnx path, key, timing cache path) -> serialised engine; ``engine_from_onnx`` or a test double."""
ValidateFn = Callable[[bytes], bool]
"""Serialised engine -> can this machine's TensorRT deserialise it?"""


def read_sidecar(cache_dir: Path, key: EngineKey) -> dict[str, Any] | None:
    """The sidecar JSON of ``key``'s engine, or None when it is absent or unreadable."""
    _, sidecar = engine_paths(cache_dir, key)
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _write_sidecar(sidecar: Path, data: dict[str, Any]) -> None:
    write_bytes(sidecar, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"), make_parents=True)


def _reusable_engine(engine: Path, sidecar: Path, key: EngineKey, validate: ValidateFn | None) -> tuple[bytes | None, str]:
    """(the cached engine's bytes, "") when it may be reused, else (None, why not)."""
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "its sidecar JSON is missing"
    except (OSError, ValueError) as exc:
        return None, f"its sidecar JSON is unreadable ({exc})"
    if not isinstance(meta, dict):
        return None, "its sidecar JSON is not an object"
    try:
        cached_key = EngineKey.from_dict(meta["key"])
    except (KeyError, TypeError, ValueError) as exc:
        return None, f"its sidecar holds no valid key ({exc!r})"
    if cached_key != key:
        differing = [name for name, value in key.to_dict().items() if cached_key.to_dict()[name] != value]
        return None, f"it was built for another key (differs in {', '.join(differing)})"
    try:
        data = engine.read_bytes()
    except OSError as exc:
        return None, f"it cannot be read ({exc})"
    actual = hashlib.sha256(data).hexdigest()
    if actual != meta.get("engine_sha256"):
        return None, f"its bytes do not match the sidecar (sha256 {actual[:12]}..., sidecar {str(meta.get('engine_sha256'))[:12]}...)"
    if validate is not None and not validate(data):
        return None, "TensorRT cannot deserialise it"
    return data, ""


def load_or_build_engine(
    artifact: ModelArtifact,
    key: EngineKey,
    cache_dir: Path | None = None,
    *,
    build: BuildFn | None = None,
    validate: ValidateFn | None = None,
) -> bytes:
    """The serialised engine for ``key``: from the cache when it is intact, else built and cached.

    Args:
        artifact: the verified model; its sha256 must be ``key.onnx_sha256``.
        key: what the engine must fit.
        cache_dir: where engines live (``default_cache_dir()`` when None).
        build: the builder (``engine_from_onnx`` with the manifest's input name when None).
        validate: checks that bytes deserialise on this machine; a cached engine that fails is rebuilt, a
            fresh one that fails is an error.

    Raises:
        ValueError: ``key`` is not for ``artifact``.
        RuntimeError: a freshly built engine fails ``validate``.
        (and whatever ``build`` raises)
    """
    if key.onnx_sha256 != artifact.sha256:
        raise ValueError(f"engine key is for onnx {key.onnx_sha256[:12]}..., the artifact is {artifact.sha256[:12]}...")
    cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
    engine, sidecar = engine_paths(cache_dir, key)
    if engine.is_file():
        data, problem = _reusable_engine(engine, sidecar, key, validate)
        if data is not None:
            log.info("TensorRT engine from cache: %s", engine)
            return data
        log.warning("cached TensorRT engine %s refused: %s; rebuilding it", engine, problem)
    elif sidecar.is_file():
        log.warning("TensorRT engine cache %s has a sidecar but no engine; rebuilding it", sidecar)

    builder: BuildFn = build if build is not None else functools.partial(engine_from_onnx, input_name=artifact.manifest.input_name)
    started = time.perf_counter()
    data = builder(artifact.onnx_path, key, timing_cache_path(cache_dir, key))
    build_s = time.perf_counter() - started
    if validate is not None and not validate(data):
        raise RuntimeError(f"TensorRT built an engine for {key.describe()} that it cannot deserialise")
    # Engine first, sidecar second: the sidecar (with the engine's sha256) is what makes the engine valid,
    # so a crash between the two leaves an engine that the next run refuses and rebuilds.
    write_bytes(engine, data, make_parents=True)
    _write_sidecar(
        sidecar,
        {
            "format": SIDECAR_FORMAT,
            "key": key.to_dict(),
            "digest": key.digest(),
            "engine_sha256": hashlib.sha256(data).hexdigest(),
            "engine_bytes": len(data),
            "built_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "build_seconds": round(build_s, 2),
            "onnx_path": str(artifact.onnx_path),
        },
    )
    log.info("TensorRT engine cached: %s", engine)
    return data


def record_fp16_agreement(cache_dir: Path, key: EngineKey, agreement: dict[str, Any]) -> None:
    """Store the fp16 agreement figures (and verdict) in the engine's sidecar.

    Raises:
        ModelError: the sidecar is missing or unreadable (the engine was not built through the cache).
    """
    _, sidecar = engine_paths(cache_dir, key)
    meta = read_sidecar(cache_dir, key)
    if meta is None:
        raise ModelError(f"engine sidecar {sidecar} is missing or unreadable; rebuild the engine")
    meta["fp16_agreement"] = agreement
    _write_sidecar(sidecar, meta)
