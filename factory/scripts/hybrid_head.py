"""Fit the hybrid head on the train part and measure it against the shipped head on the selection part.

Reads the cached outputs of ``factory/scripts/cache_part_outputs.py`` (train and selection, plain and under the
robustness perturbations); the test part is not read. Heads compared, each with its L2 strength chosen by grouped
(block) cross-validation on train:
- ``shipped``: the model's own head (its cached logits);
- ``refit_pooled``: logistic regression on the 3840 pooled features alone;
- ``hybrid``: on the pooled features and the in-graph statistics (``allbatch.model.statistics``), one L2 strength;
- ``hybrid_relieved``: the same with the statistics' penalty multiplied by a relief (``STATISTICS_RELIEFS``, chosen
  with the L2 strength by the same cross-validation): 141 statistics are otherwise swamped by 3840 features;
- ``hybrid_colour``: ``hybrid_relieved`` without the texture statistics (gradients, Laplacian, multi-scale contrast,
  mask edges, neighbour correlation), which a change of resolution moves far outside the training range; its relief
  is the one cross-validation chose for ``hybrid_relieved``;
- ``hybrid_stable``: ``hybrid_relieved`` on the statistics that vary on train (std > ``MIN_STATISTIC_STD``): a
  statistic that is constant on train (e.g. the dark bins of the segmented image's histograms, empty at native
  resolution) gets an enormous standardised weight, and resizing, which blends cell and background pixels at mask
  edges, fills it; same relief;
- ``statistics_and_logits``: on the statistics and the shipped head's 4 logits.
On selection: accuracy, macro sensitivity, errors, and the drop under each cached perturbation.

Usage: python -m factory.scripts.hybrid_head [--cache /tmp/model-test-cache] [--json report.json] [--save-head head.npz]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch.model.manifest import load_model_artifact
from allbatch.model.statistics import statistic_names
from allbatch.prepare.preprocessing import Preprocessing
from factory.hybrid_head import LinearHead, block_groups, figures, fit_head_cv, input_statistics
from factory.part_outputs import PartOutputs
from factory.robustness import MAX_DROP_POINTS, PERTURBATIONS
from factory.training.head_refit import HeadRefitConfig

log = logging.getLogger("factory.scripts.hybrid_head")

WEIGHT_DECAYS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
STATISTICS_RELIEFS = (0.1, 0.01)
MIN_STATISTIC_STD = 1e-3
"""``hybrid_stable`` keeps the statistics whose train standard deviation exceeds this (0..1 pixel scale, shares)."""
TEXTURE_PREFIXES = ("grey_", "cell_grad", "cell_laplacian", "mask_edges")
"""Names of the texture statistics (``allbatch.model.statistics.statistic_names``) that ``hybrid_colour`` leaves out."""
"""Penalty multipliers tried for the statistics' weights in ``hybrid_relieved`` (the pooled features keep 1)."""


def cached_statistics(cache: Path, name: str, outputs: PartOutputs, prep: Preprocessing) -> npt.NDArray[np.float32]:
    """The statistics of a cached part, computed once and kept beside it (keyed by the statistic names)."""
    path = cache / f"{name}.statistics.npz"
    key = json.dumps(statistic_names())
    if path.exists():
        with np.load(path) as data:
            if str(data["key"]) == key and len(data["statistics"]) == len(outputs.labels):
                return np.asarray(data["statistics"])
    started = time.time()
    statistics = input_statistics(outputs, prep)
    np.savez(path, key=np.array(key), statistics=statistics)
    log.info("statistics of %s: %.0f s", name, time.time() - started)
    return statistics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/model-test-cache"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--save-head", type=Path, default=None, help="npz of the hybrid head's weight and bias")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    artifact = load_model_artifact(args.model)
    prep, temperature = artifact.manifest.prep, float(artifact.manifest.temperature)
    train = PartOutputs.load(args.cache / "train-plain-fp32.npz")
    selection = {"plain": PartOutputs.load(args.cache / "selection-plain-fp32.npz")}
    for name in PERTURBATIONS:
        path = args.cache / f"selection-{name}-fp32.npz"
        if path.exists():
            selection[name] = PartOutputs.load(path)
    train_stats = cached_statistics(args.cache, "train-plain-fp32", train, prep)
    selection_stats = {name: cached_statistics(args.cache, f"selection-{name}-fp32", part, prep) for name, part in selection.items()}
    groups = block_groups(train.blocks)
    config = HeadRefitConfig(weight_decays=WEIGHT_DECAYS)

    def raw_logits(part: PartOutputs) -> npt.NDArray[np.float32]:
        return (part.logits * temperature).astype(np.float32)  # the graph divides by the temperature: undo it

    colour: npt.NDArray[np.intp] = np.array([i for i, name in enumerate(statistic_names()) if not name.startswith(TEXTURE_PREFIXES)])
    stable: npt.NDArray[np.intp] = np.flatnonzero(train_stats.std(axis=0) > MIN_STATISTIC_STD)
    designs = {
        "refit_pooled": lambda part, stats: part.features,
        "hybrid": lambda part, stats: np.concatenate([part.features, stats], axis=1),
        "hybrid_relieved": lambda part, stats: np.concatenate([part.features, stats], axis=1),
        "hybrid_colour": lambda part, stats: np.concatenate([part.features, stats[:, colour]], axis=1),
        "hybrid_stable": lambda part, stats: np.concatenate([part.features, stats[:, stable]], axis=1),
        "statistics_and_logits": lambda part, stats: np.concatenate([stats, raw_logits(part)], axis=1),
    }
    heads: dict[str, LinearHead] = {}
    report: dict[str, object] = {"split": "train fits, selection measures; test not read", "statistics": len(statistic_names())}
    reliefs: dict[float, LinearHead] = {}
    pooled_width = train.features.shape[1]
    for relief in STATISTICS_RELIEFS:
        penalty = np.ones(pooled_width + train_stats.shape[1], dtype=np.float32)
        penalty[pooled_width:] = relief
        reliefs[relief] = fit_head_cv(designs["hybrid_relieved"](train, train_stats), train.labels, groups, config, penalty)
    best_relief = min(reliefs, key=lambda r: min(s["nll"] for s in reliefs[r].cross_validation.values()))
    heads["hybrid_relieved"] = reliefs[best_relief]
    colour_penalty = np.ones(pooled_width + len(colour), dtype=np.float32)
    colour_penalty[pooled_width:] = best_relief
    heads["hybrid_colour"] = fit_head_cv(designs["hybrid_colour"](train, train_stats), train.labels, groups, config, colour_penalty)
    stable_penalty = np.ones(pooled_width + len(stable), dtype=np.float32)
    stable_penalty[pooled_width:] = best_relief
    heads["hybrid_stable"] = fit_head_cv(designs["hybrid_stable"](train, train_stats), train.labels, groups, config, stable_penalty)
    report["stable_statistics"] = [statistic_names()[i] for i in stable]
    report["hybrid_relieved_relief"] = best_relief
    report["hybrid_relieved_cv_by_relief"] = {
        str(r): {str(wd): s for wd, s in head.cross_validation.items()} for r, head in reliefs.items()
    }
    for name, design in designs.items():
        if name in heads:
            continue
        started = time.time()
        heads[name] = fit_head_cv(design(train, train_stats), train.labels, groups, config)
        log.info("%s: weight decay %g chosen (%.0f s)", name, heads[name].weight_decay, time.time() - started)
    results: dict[str, dict[str, object]] = {}
    for head_name in ["shipped", *designs]:
        conditions: dict[str, dict[str, Any]] = {}
        plain_accuracy = 0.0
        for condition, part in selection.items():
            if head_name == "shipped":
                logits = part.logits.astype(np.float64)
            else:
                logits = heads[head_name].logits(designs[head_name](part, selection_stats[condition]))
            result = figures(part.labels, logits)
            if condition == "plain":
                plain_accuracy = float(result["accuracy"])
            result["drop_points"] = round(100.0 * (plain_accuracy - float(result["accuracy"])), 2)
            conditions[condition] = result
        drops = [float(c["drop_points"]) for k, c in conditions.items() if k != "plain"]
        results[head_name] = {
            "weight_decay": heads[head_name].weight_decay if head_name in heads else None,
            "cross_validation": {str(k): v for k, v in heads[head_name].cross_validation.items()} if head_name in heads else None,
            "selection": conditions,
            "worst_drop_points": max(drops, default=None),
            "meets_robustness_target": None if not drops else max(drops) <= MAX_DROP_POINTS,
        }
        plain = conditions["plain"]
        shown = {k: v for k, v in plain.items() if k != "confusion"}
        log.info("%s on selection: %s; worst drop %s", head_name, shown, max(drops, default=None))
    report["heads"] = results
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    if args.save_head is not None:
        head = heads["hybrid"]
        np.savez(args.save_head, weight=head.weight, bias=head.bias, weight_decay=head.weight_decay)


if __name__ == "__main__":
    main()
