"""Model outputs of one part of the split under one condition, kept on disk so that every later step
(hybrid-head fitting, robustness of a head, the reduced-precision gate) reuses one pass of the backbone.

A head is a function of the pooled features (and, for the hybrid head, of statistics of the input), so the
inputs are kept too: as the (n, 2, 3, S, S) uint8 pixels they were normalised from (``resize_rgb`` returns
uint8, so ``pixels_to_inputs`` gives the float32 inputs back exactly).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from allbatch.backends.base import Backend
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.recipe import ImageChange, prepare_rgb, read_rgb
from allbatch.prepare.segment import SegmentationParams
from factory.training.split import LabelledImage, block_key

log = logging.getLogger("factory.part_outputs")


def inputs_to_pixels(inputs: npt.NDArray[np.float32], prep: Preprocessing) -> npt.NDArray[np.uint8]:
    """(n, 2, 3, S, S) float32 normalised inputs -> the uint8 pixels they were made from."""
    return np.clip(np.rint((inputs * prep.std + prep.mean) * 255.0), 0, 255).astype(np.uint8)


def pixels_to_inputs(pixels: npt.NDArray[np.uint8], prep: Preprocessing) -> npt.NDArray[np.float32]:
    """(n, 2, 3, S, S) uint8 -> float32 normalised inputs, as ``assemble_pair`` computes them."""
    from allbatch.prepare.assemble import assemble_pair

    n = len(pixels)
    if n == 0:
        return np.empty(pixels.shape, dtype=np.float32)
    originals = pixels[:, 0].transpose(0, 2, 3, 1)
    segmented = pixels[:, 1].transpose(0, 2, 3, 1)
    result: npt.NDArray[np.float32] = assemble_pair(np, np.ascontiguousarray(originals), np.ascontiguousarray(segmented), prep)
    return result


@dataclass
class PartOutputs:
    """One pass over a part: names (n,) relative paths, labels (n,) int64, blocks (n, 2) int64 (class, block),
    pixels (n, 2, 3, S, S) uint8, mask_fraction (n,) float32, sizes (n, 2) int32, and the backend's
    probs / logits (n, C) and features (n, F) float32; ``backend`` says which runtime and precision made them."""

    names: list[str]
    labels: npt.NDArray[np.int64]
    blocks: npt.NDArray[np.int64]
    pixels: npt.NDArray[np.uint8]
    mask_fraction: npt.NDArray[np.float32]
    sizes: npt.NDArray[np.int32]
    probs: npt.NDArray[np.float32]
    logits: npt.NDArray[np.float32]
    features: npt.NDArray[np.float32]
    backend: str

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            names=np.array(self.names, dtype=np.str_),
            labels=self.labels,
            blocks=self.blocks,
            pixels=self.pixels,
            mask_fraction=self.mask_fraction,
            sizes=self.sizes,
            probs=self.probs,
            logits=self.logits,
            features=self.features,
            backend=np.array(self.backend),
        )

    @classmethod
    def load(cls, path: Path) -> PartOutputs:
        with np.load(path) as data:
            return cls(
                [str(n) for n in data["names"]],
                data["labels"],
                data["blocks"],
                data["pixels"],
                data["mask_fraction"],
                data["sizes"],
                data["probs"],
                data["logits"],
                data["features"],
                str(data["backend"]),
            )


def run_part(
    images: Sequence[LabelledImage],
    root: Path,
    backend: Backend,
    prep: Preprocessing,
    seg: SegmentationParams,
    change: ImageChange | None = None,
    block_size: int = 25,
    batch_size: int = 32,
) -> PartOutputs:
    """Prepare every image of ``images`` (with ``change`` applied to the original) and run ``backend`` (entered) on it."""
    size = prep.size
    pixels = np.empty((len(images), 2, 3, size, size), dtype=np.uint8)
    mask_fraction = np.empty(len(images), dtype=np.float32)
    sizes = np.empty((len(images), 2), dtype=np.int32)
    probs, logits, features = [], [], []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        batch = np.empty((len(chunk), 2, 3, size, size), dtype=np.float32)
        for row, image in enumerate(chunk):
            prepared = prepare_rgb(read_rgb(image.path), prep, seg, change, out=batch[row])
            mask_fraction[start + row] = prepared.mask_fraction
            sizes[start + row] = prepared.size
        pixels[start : start + len(chunk)] = inputs_to_pixels(batch, prep)
        output = backend.infer(batch)
        probs.append(output.probs)
        logits.append(output.logits)
        features.append(output.features)
        log.info("%d/%d images", start + len(chunk), len(images))
    return PartOutputs(
        names=[str(image.path.relative_to(root)) for image in images],
        labels=np.array([image.label for image in images], dtype=np.int64),
        blocks=np.array([block_key(image, block_size) for image in images], dtype=np.int64).reshape(len(images), 2),
        pixels=pixels,
        mask_fraction=mask_fraction,
        sizes=sizes,
        probs=np.concatenate(probs).astype(np.float32),
        logits=np.concatenate(logits).astype(np.float32),
        features=np.concatenate(features).astype(np.float32),
        backend=backend.name,
    )
