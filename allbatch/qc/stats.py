"""The training statistics quality control needs, as stored in the model manifest's ``qc`` field.

```
qc = {
  "format": 1,
  "fitted_on": {...},                       # which images (training part of the block split), how many
  "percentiles": {measure: {"p0.1": x, ...}},  # per scalar measure, over the training images
  "rules": [{"flag": "blurred", "measure": "blur", "below": "p0.1", "scale": 0.5, "offset": 0}, ...],
  "features": {"class_means": array, "basis": array, "variances": array, "residual_variance": x},
}
```
An array is ``{"dtype", "shape", "base64"}`` (little-endian bytes): the basis is float16 (K x F), which
keeps the manifest under 1 MB for K = 64, F = 3,840 (a full 3,840 x 3,840 float32 covariance would be
59 MB, more than the whole model). A threshold is a training percentile times ``scale``; the rules
decide which side of it fires which flag, so a model's statistics and thresholds travel together and
no threshold is a constant in code. A threshold is ``percentile x scale + offset``; the offset widens ranges of
measures that straddle zero (colour differences), where a scale would not.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch.core.errors import ModelError
from allbatch.qc.flags import QcFlag

QC_FORMAT = 1
PERCENTILES = (0.1, 0.5, 1.0, 2.5, 5.0, 25.0, 50.0, 75.0, 95.0, 97.5, 99.0, 99.5, 99.9)
"""The percentiles stored per measure (the report shows some; the rules pick theirs)."""
SCALAR_MEASURES = (
    "blur",
    "colour_r",
    "colour_g",
    "colour_b",
    "chroma",
    "red_minus_green",
    "blue_minus_green",
    "stain_hue",
    "mask_fraction",
    "components",
    "min_side",
    "max_prob",
    "margin",
    "entropy",
    "energy",
    "distance",
)
"""Per-image scalars a rule can test (``scalar_measures`` derives them from the stored ones)."""


def percentile_key(q: float) -> str:
    """0.5 -> "p0.5", 99.0 -> "p99"."""
    return f"p{q:g}"


def encode_array(array: npt.NDArray[Any], dtype: str) -> dict[str, Any]:
    """An array as JSON-able {"dtype", "shape", "base64"} (little-endian)."""
    data = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    return {"dtype": dtype, "shape": list(data.shape), "base64": base64.b64encode(data.tobytes()).decode("ascii")}


def decode_array(value: dict[str, Any]) -> npt.NDArray[np.float32]:
    """Inverse of ``encode_array``, returned as float32."""
    raw = base64.b64decode(value["base64"])
    array = np.frombuffer(raw, dtype=np.dtype(value["dtype"]).newbyteorder("<")).reshape(value["shape"])
    return array.astype(np.float32)


@dataclass(frozen=True)
class Rule:
    """Flag ``flag`` when ``measure`` is below (``side`` "below") or above ``threshold``."""

    flag: QcFlag
    measure: str
    side: str
    threshold: float
    source: str
    """How the threshold was made, e.g. "p0.5 x 0.5" (shown in results.h5 and the report)."""


@dataclass(frozen=True)
class FeatureStats:
    """Training features, l2-normalised: per-class means (C, F), a PCA basis (K, F) of the within-class
    residuals with its variances (K,), and the mean variance of the other F - K directions."""

    class_means: npt.NDArray[np.float32]
    basis: npt.NDArray[np.float32]
    variances: npt.NDArray[np.float32]
    residual_variance: float


@dataclass(frozen=True)
class QcStats:
    """A manifest's ``qc`` field, parsed: the rules with resolved thresholds and the feature statistics."""

    rules: tuple[Rule, ...]
    features: FeatureStats | None
    percentiles: dict[str, dict[str, float]]
    fitted_on: dict[str, Any]

    def describe(self) -> list[dict[str, Any]]:
        """The rules as JSON-able dicts (written into results.h5 as provenance)."""
        return [
            {"flag": rule.flag.word, "measure": rule.measure, "side": rule.side, "threshold": rule.threshold, "source": rule.source}
            for rule in self.rules
        ]


def manifest_json_for_provenance(manifest: Any) -> str:
    """The manifest as JSON for results.h5, with the qc feature arrays (about 0.9 MB of base64) replaced
    by their sha256: every results file would otherwise carry them; rules and percentiles stay."""
    import hashlib
    import json

    data = json.loads(manifest.to_json())
    features = data.get("qc", {}).get("features")
    if isinstance(features, dict):
        digest = hashlib.sha256(json.dumps(features, sort_keys=True).encode()).hexdigest()
        data["qc"]["features"] = {"omitted": "see the model manifest", "sha256": digest}
    return json.dumps(data, indent=2, sort_keys=True)


def parse_qc(qc: dict[str, Any], num_features: int, num_classes: int) -> QcStats | None:
    """The manifest's ``qc`` field -> QcStats; None when the field is empty (a model without statistics).

    Raises:
        ModelError: an unknown format, flag or measure, a missing percentile, or arrays of the wrong shape.
    """
    if not qc:
        return None
    try:
        if qc.get("format") != QC_FORMAT:
            raise ModelError(f"model manifest qc format {qc.get('format')!r}; this allbatch reads format {QC_FORMAT}")
        percentiles = {name: {key: float(v) for key, v in values.items()} for name, values in qc["percentiles"].items()}
        rules = []
        for entry in qc["rules"]:
            measure = entry["measure"]
            side = "below" if "below" in entry else "above"
            key = entry[side]
            if measure not in SCALAR_MEASURES or key not in percentiles.get(measure, {}):
                raise ModelError(f"model manifest qc rule {entry} names an unknown measure or percentile")
            scale = float(entry.get("scale", 1.0))
            offset = float(entry.get("offset", 0.0))
            source = key + (f" x {scale:g}" if scale != 1.0 else "") + (f" {offset:+g}" if offset else "")
            threshold = percentiles[measure][key] * scale + offset
            rules.append(Rule(QcFlag[entry["flag"].upper()], measure, side, threshold, source))
        features = None
        if "features" in qc and "class_means" in qc["features"]:
            raw = qc["features"]
            features = FeatureStats(
                decode_array(raw["class_means"]),
                decode_array(raw["basis"]),
                decode_array(raw["variances"]),
                float(raw["residual_variance"]),
            )
            k = features.basis.shape[0]
            shapes_ok = (
                features.class_means.shape == (num_classes, num_features)
                and features.basis.shape == (k, num_features)
                and features.variances.shape == (k,)
            )
            if not shapes_ok:
                raise ModelError(
                    f"model manifest qc feature statistics have shapes {features.class_means.shape}, {features.basis.shape}; "
                    f"the model has {num_classes} classes and {num_features} features"
                )
        return QcStats(tuple(rules), features, percentiles, dict(qc.get("fitted_on", {})))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"cannot read the model manifest's qc statistics: {exc!r}") from exc
