"""Robustness suite and calibration of a model on its validation part (issue 10, points 2 and 3).

Runs the validation files named in the manifest (``training.val_files``) plainly and under each
perturbation of ``allbatch.evaluation.robustness.PERTURBATIONS`` with ONNX Runtime, then fits a logit
temperature on the plain validation logits (NLL) and reports the 15-bin ECE before and after it.

Usage:
  python scripts/robustness.py [--model engines/allbatch-densenet201.onnx] [--data ../shared/data/all-kaggle/Original]
         [--only NAME ...] [--limit N] [--json out.json] [--write] [--calibrate]
--write stores the figures in the manifest (validation.robustness, validation.calibration); --calibrate
also re-exports the model with the fitted temperature in its graph and manifest (``reexport_artifact``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from allbatch import CLASS_NAMES
from allbatch.backends.ort_backend import OnnxRuntimeBackend
from allbatch.evaluation.calibration import calibrate
from allbatch.evaluation.robustness import RobustnessReport, run_suite
from allbatch.manifest import load_model_artifact, manifest_path_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="ONNX artifact (default: the shipped model)")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/all-kaggle/Original")
    parser.add_argument("--only", nargs="*", default=None, help="perturbation names (default: all)")
    parser.add_argument("--limit", type=int, default=0, help="first N validation files only (0 = all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--stride", type=int, default=1, help="perturbations on every k-th validation image (1 = all)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores)")
    parser.add_argument("--json", type=Path, default=None, help="write the report (and plain logits) as JSON")
    parser.add_argument("--write", action="store_true", help="store robustness + calibration in the manifest")
    parser.add_argument("--calibrate", action="store_true", help="re-export the model with the fitted temperature")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    artifact = load_model_artifact(args.model)
    manifest = artifact.manifest
    val_files = list(manifest.training["val_files"])[: args.limit or None]
    paths = [args.data / rel for rel in val_files]
    labels = np.array([CLASS_NAMES.index(Path(rel).parts[0]) for rel in val_files])
    started = time.time()

    def save_partial(partial: RobustnessReport) -> None:
        if args.json is not None:
            args.json.with_suffix(".partial.json").write_text(json.dumps(partial.to_dict(), indent=1))

    with OnnxRuntimeBackend(artifact, threads=args.threads) as backend:
        report = run_suite(
            paths,
            labels,
            backend.infer,
            manifest.prep,
            manifest.seg,
            names=args.only,
            batch_size=args.batch_size,
            stride=args.stride,
            progress=save_partial,
        )
    seconds = time.time() - started
    # the graph's logits are divided by the artifact's temperature: undo it to fit a temperature from scratch
    raw_logits = report.plain_logits.astype(np.float64) * float(manifest.temperature)
    calibration = calibrate(raw_logits, labels)
    load = os.getloadavg()
    context = {
        "measured_on": "ONNX Runtime CPU",
        "n": len(paths),
        "split_rule": manifest.training.get("split_rule"),
        "seconds": round(seconds, 1),
        "load_average_at_end": [round(x, 2) for x in load],
    }
    robustness = {**context, **report.to_dict()}
    print(report.markdown_table())
    print("calibration", json.dumps(calibration.to_dict()))
    if args.json is not None:
        record = {"robustness": robustness, "calibration": calibration.to_dict(), "val_files": val_files}
        args.json.write_text(json.dumps({**record, "plain_logits": raw_logits.tolist(), "labels": labels.tolist()}))
    if args.write or args.calibrate:
        if args.limit:
            raise SystemExit("--write/--calibrate need the whole validation part (no --limit)")
        validation = {**manifest.validation, "robustness": robustness, "calibration": {**context, **calibration.to_dict()}}
        if args.calibrate:
            from allbatch.model.onnx_io import reexport_artifact

            reexport_artifact(artifact.onnx_path, artifact.onnx_path, temperature=calibration.temperature, validation=validation)
            print(f"re-exported {artifact.onnx_path} with temperature {calibration.temperature:.4f}")
        else:
            manifest.validation = validation
            manifest_path_for(artifact.onnx_path).write_text(manifest.to_json() + "\n")
        print("written to", manifest_path_for(artifact.onnx_path))


if __name__ == "__main__":
    main()
