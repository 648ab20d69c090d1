"""Robustness suite and calibration of a model on its validation part (issue 10, points 2 and 3).

Runs the validation files named in the manifest (``training.val_files``) plainly and under each
perturbation of ``factory.robustness.PERTURBATIONS`` with ONNX Runtime, then fits a logit
temperature on the plain validation logits (NLL) and reports the 15-bin ECE before and after it.

Usage:
  python -m factory.scripts.robustness [--model allbatch/engines/allbatch-densenet201.onnx] [--data ../shared/data/all-kaggle/Original]
         [--only NAME ...] [--limit N] [--backend onnxruntime|openvino] [--json out.json] [--write] [--calibrate]
--calibrate re-exports the model with the temperature fitted after the plain pass in its graph and
manifest (``reexport_artifact``; the suite goes on with the loaded weights: a temperature changes no
class); --write stores the figures in the manifest (validation.robustness, validation.calibration).
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
from allbatch.backends.base import BaseBackend
from allbatch.backends.ort_backend import OnnxRuntimeBackend
from allbatch.model.manifest import load_model_artifact, manifest_path_for
from factory.calibration import calibrate
from factory.robustness import RobustnessReport, run_suite

MEASURED_ON = {"onnxruntime": "ONNX Runtime CPU (fp32)", "openvino": "OpenVINO CPU (fp32)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None, help="ONNX artifact (default: the shipped model)")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared/data/all-kaggle/Original")
    parser.add_argument("--only", nargs="*", default=None, help="perturbation names (default: all)")
    parser.add_argument("--limit", type=int, default=0, help="first N validation files only (0 = all)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--stride", type=int, default=1, help="perturbations on every k-th validation image (1 = all)")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores)")
    parser.add_argument(
        "--backend",
        choices=("onnxruntime", "openvino"),
        default="onnxruntime",
        help="fp32 runtime: ONNX Runtime (the reference) or OpenVINO fp32 (same graph, about 1.8x faster on AVX-512)",
    )
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
    if (args.write or args.calibrate) and args.limit:
        raise SystemExit("--write/--calibrate need the whole validation part (no --limit)")

    def context() -> dict[str, object]:
        return {
            "measured_on": MEASURED_ON[args.backend],
            "n": len(paths),
            "split_rule": manifest.training.get("split_rule"),
            "seconds": round(time.time() - started, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()],
        }

    calibrated: dict[str, object] = {}

    def after_condition(partial: RobustnessReport) -> None:
        """After the plain pass: calibrate (temperature only; classes, hence the suite's figures, are unchanged)."""
        if not calibrated:
            # the graph's logits are divided by the artifact's temperature: undo it to fit one from scratch
            raw_logits = partial.plain_logits.astype(np.float64) * float(manifest.temperature)
            report = calibrate(raw_logits, labels)
            calibrated.update({**context(), **report.to_dict()})
            print("calibration", json.dumps(report.to_dict()), flush=True)
            if args.json is not None:
                args.json.with_suffix(".logits.json").write_text(
                    json.dumps({"val_files": val_files, "labels": labels.tolist(), "plain_logits": raw_logits.tolist()})
                )
            if args.calibrate:
                from allbatch.model.onnx_io import reexport_artifact

                validation = {**manifest.validation, "calibration": calibrated}
                reexport_artifact(artifact.onnx_path, artifact.onnx_path, temperature=report.temperature, validation=validation)
                print(f"re-exported {artifact.onnx_path} with temperature {report.temperature:.4f}", flush=True)
        if args.json is not None:
            args.json.with_suffix(".partial.json").write_text(json.dumps(partial.to_dict(), indent=1))

    backend: BaseBackend
    if args.backend == "openvino":
        from allbatch.backends.openvino_backend import OpenVinoBackend

        backend = OpenVinoBackend(artifact, precision="fp32")
    else:
        backend = OnnxRuntimeBackend(artifact, threads=args.threads)
    with backend:
        report = run_suite(
            paths,
            labels,
            backend.infer,
            manifest.prep,
            manifest.seg,
            names=args.only,
            batch_size=args.batch_size,
            stride=args.stride,
            progress=after_condition,
        )
    robustness = {**context(), **report.to_dict()}
    print(report.markdown_table())
    if args.json is not None:
        args.json.write_text(json.dumps({"robustness": robustness, "calibration": calibrated}, indent=1))
    if args.write:
        current = load_model_artifact(artifact.onnx_path).manifest  # re-read: --calibrate may have re-exported it
        current.validation = {**current.validation, "robustness": robustness, "calibration": calibrated}
        manifest_path_for(artifact.onnx_path).write_text(current.to_json() + "\n")
        print("written to", manifest_path_for(artifact.onnx_path))


if __name__ == "__main__":
    main()
