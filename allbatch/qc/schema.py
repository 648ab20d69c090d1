"""The ``/qc`` datasets of results.h5: one row per image, like every other row dataset.

```
/qc/flags       uint16 (N,)     QcFlag bits (attribute ``bits`` = "0=blurred,1=colour,..."); 0 = no flag,
                                and 0 for failed images (their status says what went wrong)
/qc/max_prob    float32 (N,)    largest class probability
/qc/margin      float32 (N,)    largest minus second largest probability
/qc/entropy     float32 (N,)    entropy of the probabilities (nats)
/qc/energy      float32 (N,)    -logsumexp(logits); higher = less familiar
/qc/distance    float32 (N,)    Mahalanobis distance to the nearest class mean (l2-normalised
                                features); NaN when the model carries no feature statistics
/qc/blur        float32 (N,)    variance of the Laplacian of the grey image at the model input size
/qc/colour      float32 (N, 4)  mean R, G, B and chroma (0..255) at the model input size
/qc/components  int32 (N,)      8-connected segmented regions at the model input size (-1 failed)
/qc/size        int32 (N, 2)    decoded (height, width) in pixels (0 when failed or not reported)
```
Float measures are NaN for failed images. The segmented fraction is ``/seg/mask_fraction``. The stain hue
(``input_measures``) is a rule input without a column: a new column would change the row checksums and the
datasets every version 2 file must have; the colour flag and the rules (results.h5 provenance) record its use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch.qc.flags import QcFlag

FLAGS = "qc/flags"


@dataclass(frozen=True)
class QcColumn:
    """One /qc dataset: name in the file, key in the stage's output, dtype, row shape, fill for failed rows."""

    name: str
    key: str
    dtype: Any
    row_shape: tuple[int, ...]
    fill: float


QC_COLUMNS = (
    QcColumn(FLAGS, "flags", np.uint16, (), 0),
    QcColumn("qc/max_prob", "max_prob", np.float32, (), np.nan),
    QcColumn("qc/margin", "margin", np.float32, (), np.nan),
    QcColumn("qc/entropy", "entropy", np.float32, (), np.nan),
    QcColumn("qc/energy", "energy", np.float32, (), np.nan),
    QcColumn("qc/distance", "distance", np.float32, (), np.nan),
    QcColumn("qc/blur", "blur", np.float32, (), np.nan),
    QcColumn("qc/colour", "colour", np.float32, (4,), np.nan),
    QcColumn("qc/components", "components", np.int32, (), -1),
    QcColumn("qc/size", "size", np.int32, (2,), 0),
)


def empty_qc(n: int) -> dict[str, npt.NDArray[Any]]:
    """Every /qc column for ``n`` rows, filled with its failed-row value (key -> array)."""
    return {c.key: np.full((n, *c.row_shape), c.fill, dtype=c.dtype) for c in QC_COLUMNS}


def qc_columns(qc: dict[str, npt.NDArray[Any]], n: int) -> dict[str, npt.NDArray[Any]]:
    """Dataset name -> array of ``n`` rows for the writer; missing keys get their fill value.

    Raises:
        ValueError: a column with the wrong number of rows or row shape.
    """
    out = {}
    for column in QC_COLUMNS:
        value = qc.get(column.key)
        array = np.full((n, *column.row_shape), column.fill, dtype=column.dtype) if value is None else np.asarray(value, dtype=column.dtype)
        if array.shape != (n, *column.row_shape):
            raise ValueError(f"qc column {column.key} has shape {array.shape}, expected {(n, *column.row_shape)}")
        out[column.name] = array
    return out


def flags_bits_attr() -> str:
    return QcFlag.bits_attr()
