"""Score a model on the test part ONCE and write ``manifest.validation.test_part`` (issue 25, point 1).

The test part is the shipped model's validation blocks (``training.split.three_way_split``); nothing is chosen
on it. The run refuses a model whose manifest already holds a test figure for the same ONNX (a second look
would be a choice); ``--dry-run`` prints the figures without writing (reproducing the stored figure).

Usage: python -m factory.scripts.score_test_part [--model allbatch/engines/allbatch-densenet201.onnx]
       [--data ../shared/data/all-kaggle/Original] [--backend openvino|onnxruntime] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from allbatch.backends.base import BaseBackend, InferenceOutput
from allbatch.model.manifest import load_model_artifact, manifest_path_for
from allbatch.prepare.recipe import prepare_files
from factory.test_part import CHOSEN_ON_THESE_BLOCKS, INTERVAL_METHOD, headline_figures
from factory.training.data import list_development_images
from factory.training.split import three_way_split

MEASURED_ON = {"onnxruntime": "ONNX Runtime CPU (fp32)", "openvino": "OpenVINO CPU (fp32)"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared/data/all-kaggle/Original")
    parser.add_argument("--backend", choices=tuple(MEASURED_ON), default="openvino")
    parser.add_argument("--dry-run", action="store_true", help="print the figures, write nothing")
    parser.add_argument("--note", default=CHOSEN_ON_THESE_BLOCKS, help="which past choices used the test blocks")
    args = parser.parse_args()
    artifact = load_model_artifact(args.model)
    manifest = artifact.manifest
    stored = manifest.validation.get("test_part")
    if not args.dry_run and isinstance(stored, dict) and stored.get("model_sha256") == artifact.sha256:
        raise SystemExit(f"{artifact.onnx_path} already has its test figure (scored once); --dry-run reproduces it without writing")
    split = three_way_split(list_development_images(args.data))
    started = time.time()
    paths = [image.path for image in split.test]
    labels = np.array([image.label for image in split.test], dtype=np.int64)
    backend: BaseBackend
    if args.backend == "openvino":
        from allbatch.backends.openvino_backend import OpenVinoBackend

        backend = OpenVinoBackend(artifact, precision="fp32")
    else:
        from allbatch.backends.ort_backend import OnnxRuntimeBackend

        backend = OnnxRuntimeBackend(artifact)
    outputs = []
    with backend:
        for start in range(0, len(paths), 32):
            outputs.append(backend.infer(prepare_files(paths[start : start + 32], manifest.prep, manifest.seg)))
    probs = InferenceOutput.concat(outputs).probs
    record = {
        **headline_figures(labels, probs),
        "interval_method": INTERVAL_METHOD,
        "split_rule": split.rule,
        "seed": split.test_seed,
        "selection_seed": split.selection_seed,
        "parts": {"train": len(split.train), "selection": len(split.selection), "test": len(split.test)},
        "model_sha256": artifact.sha256,
        "measured_on": MEASURED_ON[args.backend],
        "command": "python -m factory.scripts.score_test_part --backend " + args.backend,
        "seconds": round(time.time() - started, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "note": args.note,
    }
    print(json.dumps({k: v for k, v in record.items() if k != "note"}, indent=1))
    if not args.dry_run:
        manifest.validation = {**manifest.validation, "test_part": record}
        manifest_path_for(artifact.onnx_path).write_text(manifest.to_json() + "\n")
        print("written to", manifest_path_for(artifact.onnx_path))


if __name__ == "__main__":
    main()
