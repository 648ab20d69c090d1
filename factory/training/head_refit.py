"""Last-layer re-training: refit the linear head on frozen features of augmented training views.

``python -m factory.training.head_refit --model ONNX --out ONNX [--passes 6] [--backend openvino --precision fp16]``

Why: the backbone is trained end to end for few epochs on a CPU, and its head learns alongside a moving
backbone from one augmented view per image and epoch. With the backbone frozen, the head is a convex
problem (multinomial logistic regression on the 3840 pooled features) that can be solved to the optimum
over many augmented views of every training image: each view goes through the one preparation recipe
with the training augmentation (``training.augment``) applied to the original before segmentation, so
the head sees how stain, light and camera changes move the features and learns to ignore those moves.

The L2 strength is chosen by grouped cross-validation on the training part (folds of whole image-number
blocks, all views of an image in one fold); the validation part is never looked at here. The standardisation
used while fitting is folded back into the weights, so the graph keeps its single ``Linear`` head. The refit
changes the logit scale, so the artifact is written with temperature 1: calibrate it again
(``factory/scripts/robustness.py --calibrate``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from allbatch.backends.base import Backend
from allbatch.model.manifest import ModelArtifact, load_model_artifact
from allbatch.prepare.recipe import ImageChange, prepare_rgb, read_rgb
from factory.training.augment import AugmentConfig, augment
from factory.training.data import list_development_images
from factory.training.split import LabelledImage, block_key

log = logging.getLogger("factory.training.head_refit")


@dataclass(frozen=True)
class HeadRefitConfig:
    """``passes``: augmented views per training image (one plain view is always added); ``seed``: of the
    views; ``weight_decays``: the L2 strengths cross-validated (penalty ``wd * |W|^2`` on standardised
    features, added to the mean cross-entropy); ``folds``: cross-validation folds of whole blocks;
    ``block_size``: image numbers per block (the split's); ``max_iter``: L-BFGS iterations per fit."""

    passes: int = 6
    seed: int = 20221
    weight_decays: tuple[float, ...] = (3e-3, 1e-2, 3e-2, 1e-1)
    folds: int = 4
    block_size: int = 25
    max_iter: int = 300


@dataclass(frozen=True)
class ViewFeatures:
    """Pooled features of every view: ``features`` (V, F) float32 host, ``labels`` (V,) int64 class
    indices, ``groups`` (V,) int64 block ids (views of one image share its block), ``views`` (V,) int64
    the pass of each view (0 = plain)."""

    features: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    groups: npt.NDArray[np.int64]
    views: npt.NDArray[np.int64]

    def save(self, path: Path, key: str) -> None:
        """Store as npz with ``key`` (what the features depend on: model, images, views) beside them."""
        np.savez(path, key=np.array(key), **{name: getattr(self, name) for name in ("features", "labels", "groups", "views")})

    @classmethod
    def load(cls, path: Path, key: str) -> ViewFeatures | None:
        """The features stored at ``path`` if they were made under the same ``key``, else None."""
        with np.load(path) as data:
            if str(data["key"]) != key:
                return None
            return cls(data["features"], data["labels"], data["groups"], data["views"])


def block_ids(images: Sequence[LabelledImage], block_size: int) -> npt.NDArray[np.int64]:
    """(n,) int64: one id per (class, block of ``block_size`` consecutive image numbers), as the split uses."""
    keys = [block_key(image, block_size) for image in images]
    index = {key: i for i, key in enumerate(sorted(set(keys)))}
    return np.array([index[key] for key in keys], dtype=np.int64)


def view_change(seed: int, view: int, image_index: int, config: AugmentConfig) -> ImageChange | None:
    """The augmentation of one view of one image (None for the plain view 0); reproducible per (seed, view, image)."""
    if view == 0:
        return None
    return partial(augment, rng=np.random.default_rng((seed, view, image_index)), config=config)


def view_features(
    images: Sequence[LabelledImage],
    artifact: ModelArtifact,
    backend: Backend,
    config: HeadRefitConfig,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> ViewFeatures:
    """Features of the plain view and ``config.passes`` augmented views of every image (entered ``backend``).

    Each chunk of images is decoded once and prepared into one batch per view; the rows come out view-major
    (all images of view 0, then view 1, ...), as ``labels``, ``groups`` and ``views`` say.
    """
    prep, seg = artifact.manifest.prep, artifact.manifest.seg
    augment_config = AugmentConfig()
    groups = block_ids(images, config.block_size)
    n_views = config.passes + 1
    parts: list[list[npt.NDArray[np.float32]]] = [[] for _ in range(n_views)]
    for start in range(0, len(images), batch_size):
        chunk = range(start, min(start + batch_size, len(images)))
        originals = [read_rgb(images[i].path) for i in chunk]
        inputs = np.empty((len(chunk), 2, 3, prep.size, prep.size), dtype=np.float32)
        for view in range(n_views):
            for row, (i, rgb) in enumerate(zip(chunk, originals, strict=True)):
                prepare_rgb(rgb, prep, seg, view_change(config.seed, view, i, augment_config), out=inputs[row])
            parts[view].append(np.asarray(backend.infer(inputs).features, dtype=np.float32))
        if progress is not None:
            progress(chunk.stop, len(images))
    return ViewFeatures(
        features=np.concatenate([part for view_parts in parts for part in view_parts]),
        labels=np.tile(np.array([image.label for image in images], dtype=np.int64), n_views),
        groups=np.tile(groups, n_views),
        views=np.repeat(np.arange(n_views, dtype=np.int64), len(images)),
    )


def fit_linear_head(
    features: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    num_classes: int,
    weight_decay: float,
    max_iter: int = 300,
    penalty_weights: npt.NDArray[np.float32] | None = None,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """L2-regularised multinomial logistic regression, solved with L-BFGS (float32 on standardised features, host).

    Args:
        features: (n, F) float32. labels: (n,) class indices. weight_decay: penalty ``wd * |W|^2`` on
            the weights of the standardised features, added to the mean cross-entropy.
        penalty_weights: (F,) float32 multipliers of each feature's penalty (None: all 1); below 1 relieves a
            block of features (the hybrid head's 141 statistics beside 3840 pooled features).
    Returns:
        weight (C, F) float32 and bias (C,) float32 acting on the raw (unstandardised) features.
    """
    x = torch.from_numpy(np.asarray(features, dtype=np.float32))
    y = torch.from_numpy(labels)
    mean, std = x.mean(0), x.std(0) + 1e-6  # constant features would otherwise divide by zero
    z = (x - mean) / std
    linear = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(linear.weight)
    torch.nn.init.zeros_(linear.bias)
    optimiser = torch.optim.LBFGS(linear.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")
    relief = None if penalty_weights is None else torch.from_numpy(np.asarray(penalty_weights, dtype=np.float32))[None, :]

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        penalty = linear.weight.pow(2) if relief is None else linear.weight.pow(2) * relief
        loss = torch.nn.functional.cross_entropy(linear(z), y) + weight_decay * penalty.sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    with torch.no_grad():
        weight = linear.weight / std  # fold the standardisation back: W z + b = (W / s) x + (b - W m / s)
        bias = linear.bias - (weight * mean).sum(1)
    return weight.float().numpy(), bias.float().numpy()


def head_logits(
    features: npt.NDArray[np.float32], weight: npt.NDArray[np.float32], bias: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    """(n, C) float64 logits of (n, F) features under a (C, F) weight and (C,) bias."""
    return features.astype(np.float64) @ weight.T.astype(np.float64) + bias.astype(np.float64)


def block_folds(groups: npt.NDArray[np.int64], folds: int, seed: int) -> npt.NDArray[np.int64]:
    """(V,) fold index of each view: whole blocks dealt to ``folds`` folds in a seeded random order."""
    order = np.random.default_rng(seed).permutation(np.unique(groups))
    fold_of_block = {int(block): i % folds for i, block in enumerate(order)}
    return np.array([fold_of_block[int(group)] for group in groups], dtype=np.int64)


def cross_validate(
    views: ViewFeatures, num_classes: int, config: HeadRefitConfig, penalty_weights: npt.NDArray[np.float32] | None = None
) -> dict[float, dict[str, float]]:
    """Per L2 strength: mean held-out NLL and error rate over ``config.folds`` folds of whole blocks.

    Blocks are dealt to folds in a seeded random order, so every fold holds blocks of every class.
    """
    fold = block_folds(views.groups, config.folds, config.seed)
    scores: dict[float, dict[str, float]] = {}
    for weight_decay in config.weight_decays:
        nll, errors = 0.0, 0
        for k in range(config.folds):
            train, held = fold != k, fold == k
            weight, bias = fit_linear_head(
                views.features[train], views.labels[train], num_classes, weight_decay, config.max_iter, penalty_weights
            )
            logits = torch.from_numpy(head_logits(views.features[held], weight, bias))
            nll += float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(views.labels[held]), reduction="sum"))
            errors += int((logits.argmax(1).numpy() != views.labels[held]).sum())
        scores[weight_decay] = {"nll": nll / len(fold), "error_rate": errors / len(fold)}
        score = scores[weight_decay]
        log.info("weight decay %g: held-out NLL %.4f, error rate %.4f", weight_decay, score["nll"], score["error_rate"])
    return scores


def training_part(data_root: Path, val_files: Sequence[str]) -> list[LabelledImage]:
    """The development images not in the manifest's validation part (the part the model was trained on)."""
    held_out = set(val_files)
    return [image for image in list_development_images(data_root) if str(image.path.relative_to(data_root)) not in held_out]


def _log_every_256(done: int, total: int) -> None:
    if done % 256 < 32:
        log.info("features of %d/%d images (every view)", done, total)


def refit_head(
    model: Path,
    out: Path,
    data_root: Path,
    backend_name: str = "openvino",
    precision: str = "fp16",
    config: HeadRefitConfig | None = None,
    limit: int = 0,
    features_cache: Path | None = None,
    checkpoint: Path | None = None,
    state_out: Path | None = None,
) -> dict[str, Any]:
    """Refit the head of the artifact ``model`` on its training part and export the result to ``out``.

    Returns the record stored in the new manifest's ``training.head_refit``. ``limit`` > 0 keeps every
    k-th training image so that about ``limit`` remain (tests). ``features_cache``: an npz of the view
    features, read when it was made for the same model, images, views and backend, else written.
    ``checkpoint``: the float32 state_dict the artifact was exported from (its ONNX keeps fp16 weights); with
    ``state_out``, the refitted network's float32 state_dict is saved there (the fp32 reference of
    ``factory/scripts/validate_model.py --checkpoint``).
    """
    from allbatch.backends.select import create_backend
    from allbatch.model.onnx_io import load_network, reexport_artifact

    config = config or HeadRefitConfig()
    artifact = load_model_artifact(model)
    manifest = artifact.manifest
    val_files = list(manifest.training.get("val_files", []))
    if not val_files:
        raise ValueError(f"{model}: the manifest lists no training.val_files; cannot tell the training part")
    images = training_part(data_root, val_files)
    if limit:
        images = images[:: max(1, len(images) // limit)]
    started = time.perf_counter()
    key = json.dumps([artifact.sha256, [str(image.path) for image in images], config.passes, config.seed, backend_name, precision])
    cached = ViewFeatures.load(features_cache, key) if features_cache is not None and features_cache.exists() else None
    if cached is not None:
        views, backend_used = cached, f"{backend_name} ({precision}), cached in {features_cache}"
    else:
        with create_backend(backend_name, artifact, max_batch=32, precision=precision) as backend:
            views = view_features(images, artifact, backend, config, progress=_log_every_256)
            backend_used = f"{backend.name} ({backend.describe().get('compute_precision', precision)})"
        if features_cache is not None:
            views.save(features_cache, key)
    feature_seconds = time.perf_counter() - started
    num_classes = len(manifest.class_names)
    scores = cross_validate(views, num_classes, config)
    chosen = min(scores, key=lambda wd: (scores[wd]["nll"], wd))
    weight, bias = fit_linear_head(views.features, views.labels, num_classes, chosen, config.max_iter)
    train_errors = int((head_logits(views.features, weight, bias).argmax(1) != views.labels).sum())
    net = load_network(model, manifest.architecture)
    if checkpoint is not None:
        net.load_state_dict(torch.load(checkpoint, map_location="cpu"))
    head = net.head[1]
    assert isinstance(head, torch.nn.Linear)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight))
        head.bias.copy_(torch.from_numpy(bias))
    record = {
        "config": {**asdict(config), "weight_decays": list(config.weight_decays)},
        "source_sha256": artifact.sha256,
        "images": len(images),
        "views": len(views.labels),
        "feature_backend": backend_used,
        "cross_validation": {str(wd): score for wd, score in scores.items()},
        "chosen_weight_decay": chosen,
        "training_view_error_rate": train_errors / len(views.labels),
        "minutes": (time.perf_counter() - started) / 60,
        "feature_minutes": feature_seconds / 60,
    }
    training = {**manifest.training, "head_refit": record}
    out.parent.mkdir(parents=True, exist_ok=True)
    reexport_artifact(model, out, temperature=1.0, net=net, training=training)
    if state_out is not None:
        torch.save(net.state_dict(), state_out)
    log.info("head refitted (weight decay %g) -> %s", chosen, out)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="the artifact whose head is refitted (its manifest names the split)")
    parser.add_argument("--out", type=Path, required=True, help="where the refitted artifact goes (ONNX; manifest beside it)")
    parser.add_argument("--data", type=Path, default=Path("../shared/data/all-kaggle/Original"))
    parser.add_argument("--backend", default="openvino", help="feature extraction backend (backends.select names)")
    parser.add_argument(
        "--precision",
        default="fp16",
        help="its precision, as `allbatch run` takes it (fp16: OpenVINO bf16 where the CPU and the model's manifest allow it)",
    )
    parser.add_argument("--passes", type=int, default=HeadRefitConfig.passes, help="augmented views per training image")
    parser.add_argument("--limit", type=int, default=0, help="about this many training images (0 = all)")
    parser.add_argument("--features-cache", type=Path, default=None, help="npz of the view features: read if made alike, else written")
    parser.add_argument("--checkpoint", type=Path, default=None, help="the float32 state_dict MODEL was exported from")
    parser.add_argument("--state-out", type=Path, default=None, help="save the refitted float32 state_dict here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    config = HeadRefitConfig(passes=args.passes)
    record = refit_head(
        args.model,
        args.out,
        args.data,
        args.backend,
        args.precision,
        config,
        args.limit,
        args.features_cache,
        args.checkpoint,
        args.state_out,
    )
    log.info("%s", json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
