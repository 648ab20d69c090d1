"""Run the model over a list of files and keep what quality control needs per image (host memory).

Used to fit the manifest statistics (fit.py) and to measure the flags on held-out and
out-of-distribution inputs (benchmarks/qc_measure.py); ``allbatch run`` does not use it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch.backends.base import InferenceOutput
from allbatch.core.records import EncodedImage
from allbatch.core.status import ImageStatus
from allbatch.model.manifest import ModelArtifact
from allbatch.qc.measures import confidence_measures, input_measures

log = logging.getLogger("factory.qc_collect")


@dataclass
class Collected:
    """Per-image model outputs and quality measures of the images that decoded (n rows, input order).

    names: (n,) str labels of the inputs (relative paths). features: (n, F) float32. logits, probs:
    (n, C) float32. mask_fraction: (n,) float32. sizes: (n, 2) int32 (height, width). measures:
    name -> (n,) or (n, k) arrays as ``input_measures`` and ``confidence_measures`` return them.
    """

    names: list[str]
    features: npt.NDArray[np.float32]
    logits: npt.NDArray[np.float32]
    probs: npt.NDArray[np.float32]
    mask_fraction: npt.NDArray[np.float32]
    sizes: npt.NDArray[np.int32]
    measures: dict[str, npt.NDArray[np.generic]]

    def save(self, path: Path) -> None:
        """Write every array to one .npz (names as a str array)."""
        arrays: dict[str, Any] = {
            "names": np.array(self.names, dtype=np.str_),
            "features": self.features,
            "logits": self.logits,
            "probs": self.probs,
            "mask_fraction": self.mask_fraction,
            "sizes": self.sizes,
            **{f"m_{k}": v for k, v in self.measures.items()},
        }
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> Collected:
        with np.load(path) as data:
            measures = {k[2:]: data[k] for k in data.files if k.startswith("m_")}
            return cls(
                [str(n) for n in data["names"]],
                data["features"],
                data["logits"],
                data["probs"],
                data["mask_fraction"],
                data["sizes"],
                measures,
            )


def collect(
    items: list[tuple[str, bytes]],
    artifact: ModelArtifact,
    batch_size: int = 32,
    threads: int = 2,
    progress: Callable[[int, int], None] | None = None,
) -> Collected:
    """Prepare (CPU path), infer (ONNX Runtime) and measure ``items`` = [(name, encoded bytes)].

    Images that do not decode are left out with a warning (this is a measuring tool, not a run).
    """
    from allbatch.backends.select import create_backend
    from allbatch.prepare.cpu import PillowPreparer

    manifest = artifact.manifest
    preparer = PillowPreparer(manifest.prep, manifest.seg, threads=threads)
    parts: list[dict[str, object]] = []
    names: list[str] = []
    try:
        with create_backend("onnxruntime", artifact, max_batch=batch_size) as backend:
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                images = [EncodedImage(start + i, name, data, "") for i, (name, data) in enumerate(chunk)]
                batch = preparer.prepare(images)
                ok = batch.ok_positions
                for image in images:
                    if image.status != ImageStatus.OK:
                        log.warning("%s left out: %s", image.relpath, image.error)
                if not ok:
                    continue
                output: InferenceOutput = backend.infer(batch.inputs)
                sizes = batch.sizes if batch.sizes is not None else np.zeros((len(images), 2), np.int32)
                parts.append(
                    {
                        "features": output.features,
                        "logits": output.logits,
                        "probs": output.probs,
                        "mask_fraction": batch.mask_fraction[ok],
                        "sizes": sizes[ok],
                        **input_measures(batch.inputs, manifest.prep),
                        **confidence_measures(output.logits),
                    }
                )
                names.extend(images[i].relpath for i in ok)
                if progress is not None:
                    progress(min(start + batch_size, len(items)), len(items))
    finally:
        preparer.close()
    if not parts:
        raise ValueError("no image decoded")
    joined = {key: np.concatenate([np.asarray(part[key]) for part in parts]) for key in parts[0]}
    fixed = ("features", "logits", "probs", "mask_fraction", "sizes")
    return Collected(
        names,
        joined["features"].astype(np.float32),
        joined["logits"].astype(np.float32),
        joined["probs"].astype(np.float32),
        joined["mask_fraction"].astype(np.float32),
        joined["sizes"].astype(np.int32),
        {key: value for key, value in joined.items() if key not in fixed},
    )
