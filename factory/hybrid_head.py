"""The hybrid head: a linear head on the pooled DenseNet features concatenated with the input's colour and
texture statistics (``allbatch.model.statistics``), fitted on the CPU from cached outputs (``factory.part_outputs``).

Fitting reuses the head-refit tool's solver (``training.head_refit.fit_linear_head``: multinomial logistic
regression with L2 on standardised inputs, the standardisation folded back into the weights) and its grouped
cross-validation (folds of whole blocks). Every setting is chosen on the train part; the selection part only
measures; the test part is never read here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from allbatch import CLASS_NAMES
from allbatch.evaluation.metrics import multiclass_metrics, screening_metrics
from allbatch.model.statistics import ImageStatistics
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.qc.measures import unblanked_rows
from factory.part_outputs import PartOutputs, pixels_to_inputs
from factory.training.head_refit import HeadRefitConfig, ViewFeatures, cross_validate, fit_linear_head, head_logits

log = logging.getLogger("factory.hybrid_head")


def statistics_module(prep: Preprocessing) -> ImageStatistics:
    """The statistics as the graph computes them for a model with preprocessing ``prep``."""
    return ImageStatistics(prep.mean, prep.std, unblanked_rows(prep)).eval()


def input_statistics(outputs: PartOutputs, prep: Preprocessing, batch_size: int = 32) -> npt.NDArray[np.float32]:
    """(n, K) float32 statistics of a cached part's inputs (torch on the CPU, as the exported graph computes them)."""
    module = statistics_module(prep)
    parts = []
    with torch.no_grad():
        for start in range(0, len(outputs.labels), batch_size):
            inputs = pixels_to_inputs(outputs.pixels[start : start + batch_size], prep)
            parts.append(module(torch.from_numpy(inputs)).numpy())
    return np.concatenate(parts).astype(np.float32)


@dataclass(frozen=True)
class LinearHead:
    """A fitted head: weight (C, D) float32 and bias (C,) float32 on the raw D inputs, the L2 strength chosen
    and the cross-validation scores behind the choice."""

    weight: npt.NDArray[np.float32]
    bias: npt.NDArray[np.float32]
    weight_decay: float
    cross_validation: dict[float, dict[str, float]]

    def logits(self, inputs: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        return head_logits(inputs, self.weight, self.bias)


def fit_head_cv(
    inputs: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    groups: npt.NDArray[np.int64],
    config: HeadRefitConfig,
    penalty_weights: npt.NDArray[np.float32] | None = None,
) -> LinearHead:
    """Choose the L2 strength by grouped cross-validation (held-out NLL over folds of whole blocks), then fit on all rows."""
    views = ViewFeatures(inputs, labels, groups, np.zeros(len(labels), dtype=np.int64))
    scores = cross_validate(views, len(CLASS_NAMES), config, penalty_weights)
    chosen = min(scores, key=lambda wd: (scores[wd]["nll"], wd))
    weight, bias = fit_linear_head(inputs, labels, len(CLASS_NAMES), chosen, config.max_iter, penalty_weights)
    return LinearHead(weight, bias, chosen, scores)


def block_groups(blocks: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """(n, 2) (class, block) keys -> (n,) int64 group ids."""
    keys = [tuple(int(v) for v in row) for row in blocks]
    index = {key: i for i, key in enumerate(sorted(set(keys)))}
    return np.array([index[key] for key in keys], dtype=np.int64)


def figures(labels: npt.NDArray[np.int64], logits: npt.NDArray[np.floating[Any]]) -> dict[str, Any]:
    """Accuracy, macro sensitivity, ALL-called-ALL, Benign-called-Benign, errors and confusion of (n, C) ``logits``."""
    probs = torch.softmax(torch.from_numpy(np.asarray(logits, dtype=np.float64)), dim=1).numpy()
    multi = multiclass_metrics(labels, probs.argmax(1), CLASS_NAMES)
    screen = screening_metrics(labels, probs, CLASS_NAMES)
    confusion = multi.confusion
    return {
        "n": int(multi.n),
        "errors": int(multi.n - np.trace(confusion)),
        "accuracy": round(float(multi.accuracy), 5),
        "macro_sensitivity": round(float(multi.macro_sensitivity), 5),
        "all_called_all": round(float(screen.sensitivity), 5),
        "benign_called_benign": round(float(confusion[0, 0] / max(1, confusion[0].sum())), 5),
        "confusion": confusion.tolist(),
    }


@dataclass(frozen=True)
class HybridFit:
    """The relieved hybrid head chosen by grouped CV on train: ``head`` acts on [pooled features, standardised
    statistics]; ``shift`` / ``scale`` (K,) standardise the raw statistics ((s - shift) * scale); ``relief``: the
    statistics' penalty multiplier chosen; ``cross_validation``: {relief: {weight decay: scores}}."""

    head: LinearHead
    shift: npt.NDArray[np.float32]
    scale: npt.NDArray[np.float32]
    relief: float
    cross_validation: dict[float, dict[float, dict[str, float]]]

    def design(self, features: npt.NDArray[np.float32], statistics: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """(n, 2F) features and (n, K) raw statistics -> (n, 2F + K) head inputs."""
        return np.concatenate([features, (statistics - self.shift) * self.scale], axis=1).astype(np.float32)


def fit_hybrid(
    features: npt.NDArray[np.float32],
    statistics: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    groups: npt.NDArray[np.int64],
    config: HeadRefitConfig,
    reliefs: tuple[float, ...],
) -> HybridFit:
    """Fit the hybrid head on the train part: for each statistics relief, the L2 strength by grouped CV; the
    (relief, strength) with the lowest held-out NLL wins and is refitted on every row.

    The fit standardises its inputs itself (``fit_linear_head``); the statistics' part of the returned head is
    expressed on the statistics standardised the same way (mean, unbiased std + 1e-6 of train), which the graph
    computes in float32, so the stored head weights are the O(1) standardised-space weights (safe in fp16).
    """
    design = np.concatenate([features, statistics], axis=1).astype(np.float32)
    fits: dict[float, LinearHead] = {}
    for relief in reliefs:
        penalty = np.ones(design.shape[1], dtype=np.float32)
        penalty[features.shape[1] :] = relief
        fits[relief] = fit_head_cv(design, labels, groups, config, penalty)
        log.info("relief %g: weight decay %g", relief, fits[relief].weight_decay)
    best = min(fits, key=lambda r: min(score["nll"] for score in fits[r].cross_validation.values()))
    raw = fits[best]
    shift = statistics.mean(axis=0, dtype=np.float64)
    scale = 1.0 / (statistics.std(axis=0, ddof=1, dtype=np.float64) + 1e-6)
    width = features.shape[1]
    weight = raw.weight.astype(np.float64)
    bias = raw.bias.astype(np.float64) + weight[:, width:] @ shift  # W s + b = (W / scale) z + (b + W shift)
    weight[:, width:] /= scale
    head = LinearHead(weight.astype(np.float32), bias.astype(np.float32), raw.weight_decay, raw.cross_validation)
    return HybridFit(head, shift.astype(np.float32), scale.astype(np.float32), best, {r: fit.cross_validation for r, fit in fits.items()})


def hybrid_network(base: Any, fit: HybridFit, prep: Preprocessing) -> Any:
    """A ``TwoChannelNet`` with ``base``'s backbone and the fitted hybrid head (statistics computed in the graph)."""
    from dataclasses import replace

    from allbatch.model.network import TwoChannelNet

    spec = {"mean": prep.mean, "std": prep.std, "rows": unblanked_rows(prep), "bins": statistics_module(prep).bins}
    config = replace(base.config, extra={**base.config.extra, "statistics": spec})
    net = TwoChannelNet(config)
    net.backbone.load_state_dict(base.backbone.state_dict())
    assert net.statistics is not None
    with torch.no_grad():
        net.statistics.shift.copy_(torch.from_numpy(fit.shift))
        net.statistics.scale.copy_(torch.from_numpy(fit.scale))
        head = net.head[1]
        assert isinstance(head, torch.nn.Linear)
        head.weight.copy_(torch.from_numpy(fit.head.weight))
        head.bias.copy_(torch.from_numpy(fit.head.bias))
    return net.eval()
