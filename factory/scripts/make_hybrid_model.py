"""Fit the hybrid head on the train part, measure it on the selection part, and (``--out``) export the model.

Reads the cached outputs (``factory/scripts/cache_part_outputs.py``) and their statistics (computed by
``factory/scripts/hybrid_head.py``, or here). The temperature is fitted on the selection part's logits (never on
test). The exported artifact keeps the shipped backbone; the head reads the pooled features and the in-graph
statistics. Its manifest's validation holds the selection figures and robustness; score it on test once with
``factory/scripts/score_test_part.py`` and judge bf16 with ``factory/scripts/precision_gate.py``.

Usage: python -m factory.scripts.make_hybrid_model [--cache /tmp/model-test-cache] [--json report.json] [--out ONNX]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from allbatch.model.manifest import load_model_artifact
from allbatch.model.onnx_io import load_network, reexport_artifact
from factory.calibration import calibrate, expected_calibration_error, softmax
from factory.hybrid_head import block_groups, figures, fit_hybrid, hybrid_network
from factory.part_outputs import PartOutputs
from factory.robustness import MAX_DROP_POINTS, PERTURBATIONS
from factory.scripts.hybrid_head import STATISTICS_RELIEFS, WEIGHT_DECAYS, cached_statistics
from factory.training.head_refit import HeadRefitConfig
from factory.training.split import SELECTION_FRACTION, SELECTION_SEED

log = logging.getLogger("factory.scripts.make_hybrid_model")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/model-test-cache"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None, help="export the hybrid model here (ONNX; manifest beside it)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    artifact = load_model_artifact(args.model)
    manifest = artifact.manifest
    prep, temperature = manifest.prep, float(manifest.temperature)
    train = PartOutputs.load(args.cache / "train-plain-fp32.npz")
    train_stats = cached_statistics(args.cache, "train-plain-fp32", train, prep)
    config = HeadRefitConfig(weight_decays=WEIGHT_DECAYS)
    fit = fit_hybrid(train.features, train_stats, train.labels, block_groups(train.blocks), config, STATISTICS_RELIEFS)
    selection: dict[str, PartOutputs] = {"plain": PartOutputs.load(args.cache / "selection-plain-fp32.npz")}
    for name in PERTURBATIONS:
        path = args.cache / f"selection-{name}-fp32.npz"
        if path.exists():
            selection[name] = PartOutputs.load(path)
    logits = {}
    for name, part in selection.items():
        logits[name] = fit.head.logits(fit.design(part.features, cached_statistics(args.cache, f"selection-{name}-fp32", part, prep)))
    labels = selection["plain"].labels
    calibration = calibrate(logits["plain"], labels)
    robustness: dict[str, Any] = {}
    for heads, source in (("hybrid", logits), ("shipped", {n: p.logits * temperature for n, p in selection.items()})):
        plain = figures(labels, source["plain"])
        conditions = {"plain": plain}
        for name, values in source.items():
            if name != "plain":
                result = figures(labels, values)
                result["drop_points"] = round(100.0 * (plain["accuracy"] - result["accuracy"]), 2)
                conditions[name] = result
        drops = [c["drop_points"] for n, c in conditions.items() if n != "plain"]
        robustness[heads] = {
            "conditions": conditions,
            "worst_drop_points": max(drops, default=None),
            "meets_target": bool(drops) and max(drops) <= MAX_DROP_POINTS,
            "conditions_measured": len(drops),
        }
    shipped_ece = expected_calibration_error(selection["plain"].probs, labels)
    hybrid_ece = expected_calibration_error(softmax(logits["plain"] / calibration.temperature), labels)
    report = {
        "part": f"selection (fraction {SELECTION_FRACTION} of the training blocks, seed {SELECTION_SEED}); fitted on train; test not read",
        "relief": fit.relief,
        "weight_decay": fit.head.weight_decay,
        "cross_validation": {str(r): {str(wd): s for wd, s in cv.items()} for r, cv in fit.cross_validation.items()},
        "temperature": calibration.temperature,
        "calibration": calibration.to_dict(),
        "ece_selection": {"shipped": round(shipped_ece, 5), "hybrid_calibrated": round(hybrid_ece, 5)},
        "robustness": robustness,
    }
    for name in ("shipped", "hybrid"):
        shown = {k: v for k, v in robustness[name]["conditions"]["plain"].items() if k != "confusion"}
        log.info(
            "%s: %s; worst drop %s over %d changes",
            name,
            shown,
            robustness[name]["worst_drop_points"],
            robustness[name]["conditions_measured"],
        )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1))
    if args.out is None:
        return
    net = hybrid_network(load_network(artifact.onnx_path, manifest.architecture), fit, prep)
    validation = {
        "selection": {**report, "measured_on": "cached OpenVINO CPU fp32 features; statistics by torch (the graph's module)"},
        "previous_model": {
            "onnx_sha256": artifact.sha256,
            "test_part": manifest.validation.get("test_part"),
            "note": "the backbone is the previous model's; its validation records (on the test blocks) are in git history",
        },
    }
    training = {**manifest.training, "hybrid_head": {k: report[k] for k in ("part", "relief", "weight_decay", "cross_validation")}}
    reexport_artifact(artifact.onnx_path, args.out, temperature=calibration.temperature, net=net, architecture=net.config.to_dict(),
                      training=training, validation=validation)  # fmt: skip
    log.info("exported %s", args.out)


if __name__ == "__main__":
    main()
