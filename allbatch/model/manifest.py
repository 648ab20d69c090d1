"""The model artifact: an ONNX file plus the manifest JSON beside it (``model.onnx`` + ``model.json``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from allbatch import CLASS_NAMES
from allbatch.core.errors import ModelError
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import SegmentationParams

MANIFEST_FORMAT = 2
"""2: three graph outputs (probs, logits, features) and a temperature; format 1 had ``probs`` only."""
OUTPUT_NAMES = ("probs", "logits", "features")
"""The graph outputs every model has, in this order: (N, C) probabilities, (N, C) temperature-scaled
logits, (N, F) pooled features of both channels."""
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "engines" / "allbatch-densenet201.onnx"
"""The committed reference model, shipped inside the package (``allbatch/engines/``, package data) so that
a wheel or a non-editable install finds it without the source tree."""


def sha256_of_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ModelManifest:
    """What a model needs to be run and trusted; written as JSON beside the ONNX file.

    ``input_shape`` is ``["N", 2, 3, size, size]`` (float32, normalised as ``preprocessing`` says);
    the outputs are ``output_names``: probs and logits ``[N, len(class_names)]``, features
    ``[N, num_features]``, all float32. ``logits`` are the head's outputs divided by ``temperature``
    (fitted on the validation part, see ``validation["calibration"]``), and ``probs`` their softmax.
    """

    name: str
    class_names: list[str]
    architecture: dict[str, Any]
    preprocessing: dict[str, Any]
    segmentation: dict[str, Any]
    onnx_sha256: str = ""
    input_name: str = "images"
    output_names: list[str] = field(default_factory=lambda: list(OUTPUT_NAMES))
    temperature: float = 1.0
    input_shape: list[Any] = field(default_factory=lambda: ["N", 2, 3, 224, 224])
    weights_dtype: str = "float16"
    opset: int = 18
    training: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    format_version: int = MANIFEST_FORMAT
    qc: dict[str, Any] = field(default_factory=dict)
    """Quality-control statistics of the training images (allbatch/qc/stats.py); {} when not fitted."""

    @property
    def prep(self) -> Preprocessing:
        return Preprocessing.from_dict(self.preprocessing)

    @property
    def seg(self) -> SegmentationParams:
        return SegmentationParams.from_dict(self.segmentation)

    @property
    def num_features(self) -> int:
        """Width F of the ``features`` output: both channels' pooled features (3840 for DenseNet201)."""
        from allbatch.model.config import ModelConfig

        return 2 * ModelConfig.from_dict(self.architecture).num_features

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelManifest:
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        return cls(**{key: value for key, value in data.items() if key in known})


def manifest_path_for(onnx_path: Path) -> Path:
    """``model.onnx`` -> ``model.json``."""
    return onnx_path.with_suffix(".json")


@dataclass(frozen=True)
class ModelArtifact:
    """A verified model: the ONNX path and its manifest (sha256 checked against the file)."""

    onnx_path: Path
    manifest: ModelManifest

    @property
    def sha256(self) -> str:
        return self.manifest.onnx_sha256


def load_model_artifact(onnx_path: Path | None = None) -> ModelArtifact:
    """Read and verify a model artifact; ``None`` means the committed default.

    Raises:
        ModelError: missing file or manifest, unreadable manifest, sha256 mismatch, unknown classes.
    """
    path = Path(onnx_path) if onnx_path is not None else DEFAULT_MODEL
    if not path.is_file():
        hint = " (the default model ships in allbatch/engines/; reinstall allbatch or pass --model PATH)" if onnx_path is None else ""
        raise ModelError(f"model file not found: {path}{hint}")
    manifest_file = manifest_path_for(path)
    if not manifest_file.is_file():
        raise ModelError(f"model manifest not found beside the model: {manifest_file}")
    try:
        manifest = ModelManifest.from_json(manifest_file.read_text(encoding="utf-8"))
    except (ValueError, TypeError) as exc:
        raise ModelError(f"cannot read model manifest {manifest_file}: {exc}") from exc
    actual = sha256_of_file(path)
    if manifest.onnx_sha256 != actual:
        raise ModelError(
            f"model {path} does not match its manifest (sha256 {actual[:12]}..., manifest says "
            f"{manifest.onnx_sha256[:12]}...): the file is corrupt or the manifest belongs to another model"
        )
    if manifest.format_version != MANIFEST_FORMAT or tuple(manifest.output_names) != OUTPUT_NAMES:
        raise ModelError(
            f"model {path} has manifest format {manifest.format_version} with outputs {manifest.output_names}; this allbatch needs "
            f"format {MANIFEST_FORMAT} with outputs {list(OUTPUT_NAMES)} (re-export it with allbatch.model.onnx_io.reexport_artifact)"
        )
    if tuple(manifest.class_names) != CLASS_NAMES:
        raise ModelError(f"model classes {manifest.class_names} differ from allbatch's {list(CLASS_NAMES)}")
    return ModelArtifact(onnx_path=path, manifest=manifest)


BENIGN_CLASS = "Benign"
"""The one class that is not leukaemia; every other class of ``CLASS_NAMES`` is an ALL subtype."""
RATE_SOURCES = (("test_part",), ("onnx_runtime", "plain"))
"""Where in ``ModelManifest.validation`` the confusion matrix behind the verdict rates is read, first found
wins: the model's held-out test part when it has one, else its validation part (ONNX Runtime, plain images)."""


@dataclass(frozen=True)
class BenignErrors:
    """How often the model called a Benign image ALL where it was measured: ``errors`` of ``images``
    Benign images were predicted as an ALL class; ``source`` names the manifest entry (``validation.test_part``)."""

    errors: int
    images: int
    source: str

    @property
    def rate(self) -> float:
        return self.errors / self.images if self.images else float("nan")


def benign_errors_of(validation: dict[str, Any], class_names: tuple[str, ...] = CLASS_NAMES) -> BenignErrors | None:
    """The Benign -> ALL error count of a manifest's ``validation`` field (the one place verdict rates are read).

    Reads ``validation.test_part.confusion`` when present, else ``validation.onnx_runtime.plain.confusion``:
    a (C, C) list of image counts, rows the true class, columns the prediction, in ``class_names`` order.
    Errors are the Benign row's counts outside the Benign column. None when neither entry exists (a model
    that was never measured, e.g. a test model).

    Raises:
        ModelError: the entry exists but is not a (C, C) matrix of non-negative integers, or has no Benign image.
    """
    for keys in RATE_SOURCES:
        entry: Any = validation
        for key in keys:
            entry = entry.get(key) if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or "confusion" not in entry:
            continue
        source = "validation." + ".".join(keys)
        confusion = entry["confusion"]
        k = len(class_names)
        if not (
            isinstance(confusion, list)
            and len(confusion) == k
            and all(isinstance(row, list) and len(row) == k and all(isinstance(v, int) and v >= 0 for v in row) for row in confusion)
        ):
            raise ModelError(f"model manifest {source}.confusion must be a {k}x{k} matrix of image counts, got {confusion!r}")
        row = confusion[class_names.index(BENIGN_CLASS)]
        if sum(row) == 0:
            raise ModelError(f"model manifest {source}.confusion has no Benign image: no Benign -> ALL error rate")
        benign = class_names.index(BENIGN_CLASS)
        return BenignErrors(errors=sum(v for j, v in enumerate(row) if j != benign), images=sum(row), source=source)
    return None
