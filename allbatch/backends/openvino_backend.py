"""OpenVINO on the CPU: the committed ONNX compiled by OpenVINO's CPU plugin (``pip install allbatch[openvino]``).

Throughput-oriented: ``PERFORMANCE_HINT=THROUGHPUT`` gives one stream per group of cores, and ``infer`` splits
each batch over that many asynchronous infer requests, so every core works on its own
images without synchronising with the others. The requests run in OpenVINO's threads without the GIL, so the
pipeline's producer thread keeps decoding the next batch meanwhile.

Precision: ``bf16`` on CPUs with native bf16 (AVX512_BF16, AMX-BF16), else ``fp32``. bf16 is used only once it
agrees with the fp32 reference (ONNX Runtime) on real images, with the thresholds of the GPU fp16 gate
(``fp16_check``); the figures are stored in the compile cache beside OpenVINO's compiled blobs, keyed by the
model, the OpenVINO version, the CPU and the precision. A model whose manifest records a bf16 refusal on its
validation images (``validation.openvino_bf16``, written by ``factory/scripts/precision_agreement.py --openvino``:
hundreds of images, where the check here has the 8 demo images) runs in fp32 under ``auto``, and an explicit
bf16 is refused. A verdict of the user-facing gate (``gate`` set, written by ``factory/scripts/precision_gate.py``:
labels, ECE, QC flags and folder verdicts on the selection part) that accepts bf16 replaces the 0.02 bound of the
check here by its ``runtime_max_abs_prob_diff`` (the move it measured, with a margin): the check then tells
whether this CPU's bf16 kernels behave like the measured ones. ``openvino`` is imported lazily.
"""

from __future__ import annotations

import hashlib
import json
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
    reference_probs,
)
from allbatch.backends.trt_engine import default_cache_dir
from allbatch.core.atomic_file import write_bytes
from allbatch.core.errors import BackendUnavailableError, ModelError, UserInputError
from allbatch.environment.cpu_features import CpuFeatures, cpu_features
from allbatch.model.manifest import ModelArtifact

if TYPE_CHECKING:
    import openvino

log = logging.getLogger("allbatch.backends")

INSTALL_HINT = "pip install 'allbatch[openvino]'"
PRECISIONS = ("auto", "bf16", "fp32")
"""``auto``: bf16 where the CPU computes it natively, else fp32."""
CHECK_BATCH = 16
"""Images per call during the agreement check."""
REQUESTS_PER_STREAM = 2
"""Infer requests per OpenVINO stream: a batch is cut into that many more, smaller pieces. The streams take
queued requests as they come free, so a stream slowed down by the pipeline's decode threads (on a small
machine they share its cores) takes fewer pieces instead of holding up the whole batch."""
_OV_TYPE = {"bf16": "bf16", "fp32": "f32"}
"""OpenVINO element type names (``openvino.Type`` attributes)."""


def openvino_status() -> tuple[bool, str]:
    """(can OpenVINO run the model on this CPU?, its version, the CPU's ISA and the precision ``auto`` picks)."""
    try:
        import openvino
    except ImportError:
        return False, f"openvino not installed ({INSTALL_HINT})"
    features = cpu_features()
    return True, (
        f"openvino {openvino.get_version().split('-')[0]} on CPU ({features.usable_cores} cores; {features.isa_summary()}; "
        f"precision auto: {auto_precision(features)}, fp32 for a model whose manifest refuses bf16)"
    )


def auto_precision(features: CpuFeatures) -> str:
    """bf16 where the CPU has it in hardware (about 4x the fp32 arithmetic on AMX), else fp32."""
    return "bf16" if features.native_bf16 else "fp32"


def manifest_bf16_refusal(artifact: ModelArtifact) -> str | None:
    """Why the model's manifest refuses OpenVINO bf16 (``validation.openvino_bf16`` with ``accepted`` false), or
    None when it records no refusal (accepted, or never measured)."""
    verdict = artifact.manifest.validation.get("openvino_bf16")
    if not isinstance(verdict, dict) or verdict.get("accepted", True):
        return None
    return f"{verdict.get('reason', 'refused')} (the model's manifest, validation.openvino_bf16)"


def bf16_check_bound(artifact: ModelArtifact) -> float:
    """The largest probability move the load-time bf16 check allows for this model: the manifest's accepting
    user-facing verdict's ``runtime_max_abs_prob_diff`` when it has one, else ``FP16_MAX_ABS_PROB_DIFF`` (0.02)."""
    verdict = artifact.manifest.validation.get("openvino_bf16")
    if isinstance(verdict, dict) and verdict.get("accepted") is True and verdict.get("gate"):
        bound = verdict.get("runtime_max_abs_prob_diff")
        if isinstance(bound, int | float) and 0.0 < float(bound) <= 1.0:
            return float(bound)
    return FP16_MAX_ABS_PROB_DIFF


def judge_bf16(figures: dict[str, Any], artifact: ModelArtifact) -> tuple[bool, str]:
    """``judge_fp16`` with the model's bound (``bf16_check_bound``) in place of the fixed 0.02."""
    bound = bf16_check_bound(artifact)
    agreement = float(figures["argmax_agreement"])
    diff = float(figures["max_abs_prob_diff"])
    stated = (
        f"argmax agreement {agreement:.4f} (>= {FP16_MIN_ARGMAX_AGREEMENT} needed), "
        f"max |p16 - p32| {diff:.4g} (<= {bound:g} allowed"
        + (", the model's user-facing bf16 verdict" if bound != FP16_MAX_ABS_PROB_DIFF else "")
        + f") on {figures['n']} images"
    )
    return agreement >= FP16_MIN_ARGMAX_AGREEMENT and diff <= bound, stated  # a NaN compares False: refused


def openvino_cache_dir() -> Path:
    """``<allbatch cache>/openvino``: OpenVINO's compiled blobs and the bf16 agreement figures."""
    return default_cache_dir().parent / "openvino"


class OpenVinoBackend(BaseBackend):
    """Runs the model with OpenVINO's CPU plugin.

    Args:
        artifact: the verified model; compiled from its ONNX.
        precision: "auto" (bf16 where native, else fp32), "bf16" (refused on CPUs without it) or "fp32".
        max_batch: the largest chunk run at once; ``None`` runs every batch whole (split over the requests).
        cache_dir: compiled blobs and agreement figures (``openvino_cache_dir()`` when None).
        check_images: folder of real images for the bf16 agreement check. When given, the check always runs
            and its figures replace the stored ones; when None, stored figures are used, or the check runs
            on the shipped demo images.
        streams: OpenVINO CPU streams (parallel requests); None lets the THROUGHPUT hint decide.
    """

    name = "openvino"

    def __init__(
        self,
        artifact: ModelArtifact,
        *,
        precision: str = "auto",
        max_batch: int | None = None,
        cache_dir: Path | None = None,
        check_images: Path | None = None,
        streams: int | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise UserInputError(f"openvino: precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if streams is not None and streams < 1:
            raise UserInputError(f"openvino: streams must be at least 1, got {streams}")
        super().__init__(artifact, max_batch)
        self.requested_precision = precision
        self.precision = precision
        """The precision in use once entered: "bf16" or "fp32"."""
        self.cache_dir = cache_dir if cache_dir is not None else openvino_cache_dir()
        self.check_images = check_images
        self.streams = streams
        self.agreement: dict[str, Any] | None = None
        self._cpu = cpu_features()
        self._version = ""
        self._compiled: openvino.CompiledModel | None = None
        self._requests: list[openvino.InferRequest] = []

    # -- lifetime ---------------------------------------------------------------------------------

    def _load(self) -> None:
        try:
            import openvino
            import openvino.properties as props
            import openvino.properties.hint as hints
        except ImportError as exc:
            raise BackendUnavailableError(f"openvino backend: openvino not installed ({INSTALL_HINT})") from exc
        self.precision = auto_precision(self._cpu) if self.requested_precision == "auto" else self.requested_precision
        refusal = manifest_bf16_refusal(self.artifact) if self.precision == "bf16" else None
        if refusal is not None and self.requested_precision == "auto":
            log.info("openvino: fp32, not bf16: %s", refusal)
            self.precision = "fp32"
        elif refusal is not None:
            raise BackendUnavailableError(f"openvino bf16 refused: {refusal}; use --precision fp32")
        if self.precision == "bf16" and not self._cpu.native_bf16:
            raise BackendUnavailableError(
                f"openvino bf16: {self._cpu.model} has no native bf16 (AVX512_BF16 or AMX-BF16); use --precision fp32"
            )
        self._version = openvino.get_version().split("-")[0]
        self.device = f"cpu ({self._cpu.model}, {self._cpu.usable_cores} cores)"
        manifest = self.artifact.manifest
        core = openvino.Core()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        core.set_property({props.cache_dir: str(self.cache_dir)})  # compiled blobs: later runs skip compilation
        config: dict[str, Any] = {
            hints.performance_mode: hints.PerformanceMode.THROUGHPUT,
            hints.inference_precision: getattr(openvino.Type, _OV_TYPE[self.precision]),
        }
        if self.streams is not None:
            config[props.num_streams] = self.streams
        try:
            compiled = core.compile_model(str(self.artifact.onnx_path), "CPU", config)
        except RuntimeError as exc:  # OpenVINO raises RuntimeError for graphs it cannot read or compile
            raise ModelError(f"openvino cannot compile {self.artifact.onnx_path}: {exc}") from exc
        # a port may carry several tensor names (OpenVINO keeps the ONNX graph's internal ones too)
        inputs = [port.get_names() for port in compiled.inputs]
        outputs = [port.get_names() for port in compiled.outputs]
        expected = [manifest.input_name], manifest.output_names
        if [len(inputs), len(outputs)] != [1, len(expected[1])] or not all(
            name in names for name, names in zip([*expected[0], *expected[1]], [*inputs, *outputs], strict=True)
        ):
            raise ModelError(
                f"{self.artifact.onnx_path}: graph inputs {inputs} / outputs {outputs} differ from the manifest "
                f"({manifest.input_name!r} -> {manifest.output_names})"
            )
        count = int(compiled.get_property(props.optimal_number_of_infer_requests)) * REQUESTS_PER_STREAM
        self._compiled = compiled
        self._requests = [compiled.create_infer_request() for _ in range(count)]
        log.debug("openvino %s on %s: %s, %d parallel requests", self._version, self.device, self.precision, count)

    def _release(self) -> None:
        for request in self._requests:
            request.wait()  # no request may still write into buffers about to be freed
        self._requests = []
        self._compiled = None

    def _accept(self) -> None:
        """The bf16 agreement gate; fp32 is the reference and needs none."""
        if self.precision != "bf16":
            return
        sidecar = self.cache_dir / f"agreement-{self.key_digest()}.json"
        stored = _read_json(sidecar)
        if self.check_images is None and {"argmax_agreement", "max_abs_prob_diff", "n"} <= stored.keys():
            figures = stored
            accepted, reason = judge_bf16(stored, self.artifact)  # judged again: the thresholds may have changed since
            log.info("openvino bf16 agreement (stored): %s", reason)
        else:
            folder = self.check_images if self.check_images is not None else DEFAULT_CHECK_IMAGES
            inputs = check_inputs_from_folder(folder, self.artifact)
            log.info("openvino bf16 agreement check on %d images from %s against ONNX Runtime fp32", len(inputs), folder)
            step = CHECK_BATCH  # bounded activations: the check may hold hundreds of images
            probs = np.concatenate([self.infer(inputs[start : start + step]).probs for start in range(0, len(inputs), step)])
            figures = fp16_agreement(probs, reference_probs(self.artifact, inputs))
            accepted, reason = judge_bf16(figures, self.artifact)
            figures = {
                **figures,
                "accepted": accepted,
                "reason": reason,
                "key": self.key(),
                "check_images": str(folder),
                "reference": "onnxruntime fp32 (CPU)",
                "thresholds": {"min_argmax_agreement": FP16_MIN_ARGMAX_AGREEMENT, "max_abs_prob_diff": bf16_check_bound(self.artifact)},
                "checked_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            write_bytes(sidecar, (json.dumps(figures, indent=2, sort_keys=True) + "\n").encode("utf-8"), make_parents=True)
            log.info("openvino bf16 agreement: %s -> %s", reason, "accepted" if accepted else "refused")
        self.agreement = figures
        if not accepted:
            raise BackendUnavailableError(f"openvino bf16 refused: {reason}; use --precision fp32")

    def key(self) -> dict[str, str]:
        """What the stored agreement figures depend on: model, OpenVINO version, CPU and its ISA, precision."""
        return {
            "onnx_sha256": self.artifact.sha256,
            "openvino_version": self._version,
            "cpu": self._cpu.model,
            "isa": self._cpu.isa_summary(),
            "precision": self.precision,
        }

    def key_digest(self) -> str:
        return hashlib.sha256(json.dumps(self.key(), sort_keys=True).encode()).hexdigest()[:16]

    # -- inference --------------------------------------------------------------------------------

    def _infer_chunk(self, x: Any) -> InferenceOutput:
        """(n, 2, 3, S, S) float32 host array, split over the parallel requests -> host outputs in row order."""
        manifest = self.artifact.manifest
        pieces = np.array_split(x, min(len(self._requests), len(x)))
        busy = self._requests[: len(pieces)]
        for request, piece in zip(busy, pieces, strict=True):
            # returns at once; runs on its own stream. share_inputs: no copy, the piece outlives the wait below
            request.start_async({manifest.input_name: piece}, share_inputs=True)
        parts = []
        for request in busy:
            request.wait()
            # copies: a request reuses its output buffers for the next job
            parts.append(InferenceOutput(*(np.array(request.get_tensor(name).data, dtype=np.float32) for name in manifest.output_names)))
        return InferenceOutput.concat(parts)

    def describe(self) -> dict[str, Any]:
        """Provenance: OpenVINO version, CPU and ISA, precision, parallel requests, bf16 agreement figures."""
        details: dict[str, Any] = {
            "backend": self.name,
            "openvino_version": self._version,
            "device": self.device,
            "cpu_isa": self._cpu.isa_summary(),
            "compute_precision": self.precision,
            "requested_precision": self.requested_precision,
            "performance_hint": "THROUGHPUT",
            "parallel_requests": len(self._requests),
            "max_batch": self.max_batch,
            "cache_dir": str(self.cache_dir),
        }
        if self.agreement is not None:
            details["bf16_agreement"] = self.agreement
        return details


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
