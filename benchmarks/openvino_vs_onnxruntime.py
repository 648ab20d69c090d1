"""Paired comparison of the CPU backends on the same real batch: ONNX Runtime fp32, OpenVINO fp32 and OpenVINO
at the precision ``auto`` picks (bf16 where the CPU has it, through its agreement gate), alternating in rounds so
that a shared machine's load hits all of them alike. Writes JSON: images/s per backend and round, per-round
ratios against ONNX Runtime (median reported), and label / probability agreement with ONNX Runtime.

    python benchmarks/openvino_vs_onnxruntime.py [SRC] --batch 16 --rounds 5 --out RESULT.json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

from allbatch.backends.fp16_check import check_inputs_from_folder
from allbatch.backends.openvino_backend import OpenVinoBackend
from allbatch.backends.ort_backend import OnnxRuntimeBackend
from allbatch.bench.runner import default_source
from allbatch.environment.cpu_features import cpu_features
from allbatch.model.manifest import load_model_artifact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, nargs="?", default=None)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    artifact = load_model_artifact(args.model)
    batch = check_inputs_from_folder(args.src or default_source(), artifact, limit=args.batch)
    load_before = os.getloadavg()
    backends = {
        "onnxruntime_fp32": OnnxRuntimeBackend(artifact),
        "openvino_fp32": OpenVinoBackend(artifact, precision="fp32"),
        "openvino_auto": OpenVinoBackend(artifact, precision="auto"),
    }
    rates: dict[str, list[float]] = {name: [] for name in backends}
    probs: dict[str, np.ndarray] = {}
    for backend in backends.values():
        backend.__enter__()
    try:
        for name, backend in backends.items():  # warm-up, and the outputs compared
            probs[name] = backend.infer(batch).probs
        for _ in range(args.rounds):
            for name, backend in backends.items():
                tic = time.perf_counter()
                backend.infer(batch)
                rates[name].append(len(batch) / (time.perf_counter() - tic))
        details = {name: backend.describe() for name, backend in backends.items()}
    finally:
        for backend in backends.values():
            backend.__exit__(None, None, None)
    reference = probs["onnxruntime_fp32"]
    cpu = cpu_features()
    doc = {
        "cpu": cpu.to_dict(),
        "loadavg_before": [round(v, 2) for v in load_before],
        "loadavg_after": [round(v, 2) for v in os.getloadavg()],
        "batch": len(batch),
        "rounds": args.rounds,
        "images_per_s": {name: [round(v, 3) for v in values] for name, values in rates.items()},
        "images_per_s_median": {name: round(float(np.median(values)), 3) for name, values in rates.items()},
        "ratio_vs_onnxruntime_median": {
            name: round(float(np.median(np.array(values) / np.array(rates["onnxruntime_fp32"]))), 3) for name, values in rates.items()
        },
        "agreement_with_onnxruntime": {
            name: {
                "label_agreement": float((p.argmax(1) == reference.argmax(1)).mean()),
                "max_abs_prob_diff": float(np.abs(p - reference).max()),
            }
            for name, p in probs.items()
        },
        "compute_precision": {name: d.get("compute_precision") for name, d in details.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: doc[k] for k in ("images_per_s_median", "ratio_vs_onnxruntime_median", "agreement_with_onnxruntime")}, indent=1))


if __name__ == "__main__":
    main()
