"""The backend contract: every backend, created as a run creates it, against one reference.

The reference is ONNX Runtime in fp32 on one prepared batch of real images: the eight demo smears shipped in
``allbatch/demo`` (two per class), prepared by the one CPU recipe (``allbatch.prepare.recipe``). Each backend
is checked on the same batch for what the run relies on (``allbatch.run.engine``, ``allbatch.run.ray_data``):

- created through ``allbatch.run.plan.open_backend`` (``backends.select.create_backend``) with the run's batch
  size and precision, and used as a context manager that returns itself; ``infer`` outside it is refused;
- ``name`` is its registry name, ``device`` says where it runs, ``describe()`` is provenance that
  results.h5 can store (JSON) and states the precision it computes in;
- ``infer`` on one image and on several (more than ``max_batch``, so backends that chunk do) returns an
  ``InferenceOutput`` of float32 host arrays of the right shapes, ``probs`` = softmax(``logits``);
- probabilities and features within the tolerance stated for that backend and precision (``BackendCase``),
  and the same label for every image.

Models: the tiny model fixture (``tests/conftest.py``: random weights, spread probabilities) on all eight images,
and the shipped model on two images of different classes (marked slow).

Where a backend cannot run here (torch on CUDA, TensorRT: no GPU, no tensorrt), its cases are skipped with the
reason the run itself gives (``backends.select``) and carry the ``gpu`` / ``tensorrt`` markers, so that
``pytest -m gpu`` on a GPU machine runs them. torch on the CPU is not something a run creates (the run's torch
is CUDA only: no silent fallback); it exists for parity, so its case builds ``TorchBackend(device="cpu")`` directly.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from paths import DEMO

from allbatch.backends import select
from allbatch.backends.base import Backend, InferenceOutput
from allbatch.backends.fp16_check import FP16_MAX_ABS_PROB_DIFF
from allbatch.model.manifest import DEFAULT_MODEL, ModelArtifact, load_model_artifact
from allbatch.prepare.recipe import prepare_files
from allbatch.run.config import RunConfig
from allbatch.run.plan import open_backend

BATCH_SIZE = 3
"""The run's ``--batch-size`` (each backend's ``max_batch``): smaller than the eight demo images, so a backend
that chunks (OpenVINO, torch, TensorRT) runs 3 + 3 + 2 rows."""
FP32_FEATURE_ATOL = 1e-4
"""fp32 features against the reference's (values up to about 2.5; measured at most 1.5e-6 on the CPU backends)."""
REDUCED_FEATURE_ATOL = 0.1
"""Reduced-precision features against the reference's: OpenVINO bf16 (7 mantissa bits, fp16 has 10) measured
0.019 on the tiny model; five times that."""
SOFTMAX_ATOL = {"fp32": 1e-5, "reduced": 1e-3}
"""|probs - softmax(logits)|: measured at most 1.2e-7 on the CPU backends; a reduced-precision graph may
compute its softmax in fp16."""


@dataclass(frozen=True)
class BackendCase:
    """One backend at one precision, as a run asks for it, and what it must reach against the reference."""

    name: str
    """Registry name (``backends.select.BACKEND_NAMES``)."""
    precision: str
    """``RunConfig.precision`` ("fp16" is the device's reduced precision, "fp32" the reference's)."""
    prob_atol: float
    """Largest |p - p_reference| allowed for any image and class."""
    why: str
    """Where the tolerance comes from."""
    status: Callable[[], tuple[bool, str]]
    """(usable here?, why not): the run's own verdict (``backends.select``)."""
    torch_on_cpu: bool = False
    """Build ``TorchBackend(device="cpu")`` directly (a run never creates it)."""

    @property
    def reduced(self) -> bool:
        """Whether this case may compute below fp32 (ONNX Runtime never does; OpenVINO's fp16 is bf16 or fp32)."""
        return self.precision != "fp32" and self.name != "onnxruntime"

    def create(self, artifact: ModelArtifact) -> Backend:
        """The backend, not entered, exactly as the run would create it at ``BATCH_SIZE`` and ``precision``."""
        if self.torch_on_cpu:
            from allbatch.backends.torch_backend import TorchBackend

            return TorchBackend(artifact, device="cpu", precision="fp32", max_batch=BATCH_SIZE)
        config = RunConfig(Path("unused"), Path("unused.h5"), backend=self.name, precision=self.precision, batch_size=BATCH_SIZE)
        return open_backend(config, artifact)


def _torch_cpu_status() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch not installed"
    return True, f"torch {torch.__version__} on the CPU"


GPU = [pytest.mark.gpu]
TENSORRT = [pytest.mark.gpu, pytest.mark.tensorrt]
CASES = [
    pytest.param(
        BackendCase("onnxruntime", "fp32", 1e-6, "the reference's runtime and graph (measured 0.0)", select.onnxruntime_status),
        id="onnxruntime-fp32",
    ),
    pytest.param(
        BackendCase("onnxruntime", "fp16", 1e-6, "ONNX Runtime computes in fp32 whatever the run's precision", select.onnxruntime_status),
        id="onnxruntime-fp16",
    ),
    pytest.param(
        BackendCase("openvino", "fp32", 1e-5, "fp32 kernels of another runtime (measured 3.5e-7)", select.openvino_status),
        id="openvino-fp32",
    ),
    pytest.param(
        BackendCase(
            "openvino",
            "fp16",
            FP16_MAX_ABS_PROB_DIFF,
            "bf16 where the CPU has it natively, accepted by its own agreement gate at this bound (measured 0.0026)",
            select.openvino_status,
        ),
        id="openvino-fp16",
    ),
    pytest.param(
        BackendCase("torch", "fp32", 1e-4, "the ONNX weights rebuilt in torch (measured 2.4e-7)", _torch_cpu_status, torch_on_cpu=True),
        id="torch-cpu-fp32",
    ),
    pytest.param(
        BackendCase("torch", "fp32", 1e-4, "CUDA with TF32 off, the torch fp32 parity bound", select.torch_status),
        id="torch-cuda-fp32",
        marks=GPU,
    ),
    pytest.param(
        BackendCase("torch", "fp16", 5e-3, "CUDA fp16 (H200, shipped model: 2e-4 over 768 images)", select.torch_status),
        id="torch-cuda-fp16",
        marks=GPU,
    ),
    pytest.param(
        BackendCase("tensorrt", "fp32", 1e-4, "an fp32 engine, the torch fp32 parity bound", select.tensorrt_status),
        id="tensorrt-fp32",
        marks=TENSORRT,
    ),
    pytest.param(
        BackendCase("tensorrt", "fp16", FP16_MAX_ABS_PROB_DIFF, "an fp16 engine, accepted by its own gate", select.tensorrt_status),
        id="tensorrt-fp16",
        marks=TENSORRT,
    ),
]
SHIPPED_IMAGES = ("Benign/WBC-Benign-038.jpg", "Pro/WBC-Malignant-Pro-151.jpg")
"""Two demo smears of different classes for the shipped model (DenseNet201: about 1 s an image per backend here)."""


@dataclass(frozen=True)
class Reference:
    """The prepared batch of one model and ONNX Runtime fp32's outputs on it."""

    artifact: ModelArtifact
    batch: np.ndarray
    """(N, 2, 3, S, S) float32, host: the demo images prepared by the CPU recipe."""
    output: InferenceOutput


@dataclass(frozen=True)
class Observed:
    """What one backend did on the reference's batch (gathered once per backend and model)."""

    case: BackendCase
    backend: Backend
    entered_as: Any
    refused_before: BaseException | None
    refused_after: BaseException | None
    details: dict[str, Any]
    whole: InferenceOutput
    single_rows: dict[int, InferenceOutput]


def _refusal(backend: Backend, batch: np.ndarray) -> BaseException | None:
    """What ``infer`` raised outside the backend's ``with`` block (None: it ran); judged by the test, not here."""
    try:
        backend.infer(batch)
    except Exception as exc:  # noqa: BLE001 - any other error is a contract failure the test reports
        return exc
    return None


@pytest.fixture(scope="module", params=[pytest.param("tiny", id="tiny"), pytest.param("shipped", id="shipped", marks=pytest.mark.slow)])
def reference(request: pytest.FixtureRequest) -> Reference:
    if request.param == "tiny":  # exported with torch (tests/conftest.py): asked for only here
        artifact, files = load_model_artifact(request.getfixturevalue("tiny_model")), sorted(DEMO.glob("*/*.jpg"))
        assert len(files) == 8, "the package ships eight demo smears"
    else:
        if not DEFAULT_MODEL.is_file():
            pytest.skip(f"no shipped model at {DEFAULT_MODEL}")
        artifact, files = load_model_artifact(), [DEMO / name for name in SHIPPED_IMAGES]
    batch = prepare_files(files, artifact.manifest.prep, artifact.manifest.seg)
    with select.create_backend("onnxruntime", artifact, max_batch=len(files), precision="fp32") as backend:
        return Reference(artifact, batch, backend.infer(batch))


@pytest.fixture(scope="module")
def engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Compiled blobs, engines and agreement figures go to a fresh cache, not the user's (``$ALLBATCH_CACHE``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALLBATCH_CACHE", str(tmp_path_factory.mktemp("allbatch-cache")))
        yield


@pytest.fixture(scope="module", params=CASES)
def observed(request: pytest.FixtureRequest, reference: Reference, engine_cache: None) -> Observed:
    case: BackendCase = request.param
    usable, reason = case.status()
    if not usable:
        pytest.skip(f"{case.name} cannot run here: {reason}")
    backend = case.create(reference.artifact)
    batch = reference.batch
    before = _refusal(backend, batch[:1])
    with backend as entered:
        details = entered.describe()
        whole = entered.infer(batch)
        last = len(batch) - 1
        single_rows = {row: entered.infer(batch[row : row + 1]) for row in (0, last)}
    after = _refusal(backend, batch[:1])
    return Observed(case, backend, entered, before, after, details, whole, single_rows)


def _outputs(observed: Observed) -> list[tuple[str, InferenceOutput, slice]]:
    """(what, output, the reference rows it answers) for every ``infer`` call of the backend."""
    return [("all images", observed.whole, slice(None))] + [
        (f"image {row} alone", output, slice(row, row + 1)) for row, output in observed.single_rows.items()
    ]


def test_reference_separates_images_and_labels(reference: Reference) -> None:
    """Comparisons against the reference can fail: its probabilities differ between images, and its top two classes
    lie further apart than twice any tolerance, so a label that changes is a probability out of its bound."""
    probs = reference.output.probs
    assert np.ptp(probs, axis=0).max() > 1e-3, "the images should not all get the same probabilities"
    top_two = np.sort(probs, axis=1)[:, -2:]
    assert (top_two[:, 1] - top_two[:, 0]).min() > 2 * FP16_MAX_ABS_PROB_DIFF


def test_is_a_context_manager_that_guards_infer(observed: Observed) -> None:
    assert observed.entered_as is observed.backend, "__enter__ returns the backend itself"
    for when, refusal in (("before __enter__", observed.refused_before), ("after __exit__", observed.refused_after)):
        assert isinstance(refusal, RuntimeError) and "outside its `with` block" in str(refusal), (when, refusal)


def test_name_device_and_describe(observed: Observed) -> None:
    case, backend, details = observed.case, observed.backend, observed.details
    assert backend.name == case.name and details["backend"] == case.name
    assert isinstance(backend.device, str) and backend.device
    on_cpu = case.name in select.HOST_BACKENDS or case.torch_on_cpu
    assert backend.device.startswith("cpu") == on_cpu, backend.device
    json.dumps(details, allow_nan=False)  # stored in results.h5 as JSON
    computes = details.get("compute_precision", details.get("precision"))
    assert computes in ({"fp16", "bf16", "fp32"} if case.reduced else {"fp32"}), details


def test_outputs_are_float32_host_arrays_of_the_model_shapes(observed: Observed, reference: Reference) -> None:
    manifest = reference.artifact.manifest
    classes, features = len(manifest.class_names), manifest.num_features
    atol = SOFTMAX_ATOL["reduced" if observed.case.reduced else "fp32"]
    for what, output, rows in _outputs(observed):
        n = len(reference.batch[rows])
        assert isinstance(output, InferenceOutput) and len(output) == n, what
        arrays = (("probs", output.probs, classes), ("logits", output.logits, classes), ("features", output.features, features))
        for field, array, width in arrays:
            assert isinstance(array, np.ndarray) and array.dtype == np.float32, (what, field, type(array), array.dtype)
            assert array.shape == (n, width), (what, field, array.shape)
            assert np.isfinite(array).all(), (what, field)
        shifted = np.exp(output.logits - output.logits.max(axis=1, keepdims=True))
        np.testing.assert_allclose(output.probs, shifted / shifted.sum(axis=1, keepdims=True), rtol=0, atol=atol, err_msg=what)


def test_probabilities_and_features_match_the_reference(observed: Observed, reference: Reference) -> None:
    case = observed.case
    feature_atol = REDUCED_FEATURE_ATOL if case.reduced else FP32_FEATURE_ATOL
    for what, output, rows in _outputs(observed):
        expected = reference.output[rows]
        worst = float(np.abs(output.probs - expected.probs).max())
        assert worst <= case.prob_atol, f"{case.name} {case.precision}, {what}: max |dp| {worst:.3g} > {case.prob_atol} ({case.why})"
        np.testing.assert_allclose(output.features, expected.features, rtol=0, atol=feature_atol, err_msg=what)


def test_labels_equal_the_reference(observed: Observed, reference: Reference) -> None:
    for what, output, rows in _outputs(observed):
        np.testing.assert_array_equal(output.probs.argmax(axis=1), reference.output.probs[rows].argmax(axis=1), err_msg=what)
