"""Reduced-precision agreement of a model on the CPU (issue 10, point 7), without a GPU.

Reference: ONNX Runtime in fp32 (the project's portable reference, as in the TensorRT fp16 gate).
Compared: the same weights in torch on the CPU under bf16 autocast (what CPU training uses; AMX-BF16
where the CPU has it) and in fp16 throughout (weights and activations, what the torch CUDA backend's fp16
runs; AVX512-FP16 where the CPU has it), on every k-th validation image of the manifest. The figures use
``backends.fp16_check.fp16_agreement`` and the thresholds of ``judge_fp16``. TensorRT fp16 on a GPU is
checked by ``allbatch engine build``.

``--openvino`` also measures OpenVINO bf16 (what ``--backend auto`` picks on CPUs with native bf16) and, with
``--write``, stores this probability-bound verdict as ``validation.openvino_bf16_probability_bound``. The verdict
``--backend auto`` follows (``validation.openvino_bf16``) is the user-facing gate's (labels, ECE, QC flags, folder
verdicts on the selection part): ``factory/scripts/precision_gate.py``.

Usage: python -m factory.scripts.precision_agreement [--model ...] [--data ...] [--stride 8] [--openvino] [--write]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from allbatch.backends.fp16_check import fp16_agreement, judge_fp16
from allbatch.backends.ort_backend import OnnxRuntimeBackend
from allbatch.model.manifest import ModelArtifact, load_model_artifact, manifest_path_for
from allbatch.model.network import ExportedNet
from allbatch.model.onnx_io import load_network
from allbatch.prepare.recipe import prepare_files


def openvino_bf16_verdict(artifact: ModelArtifact, inputs: np.ndarray, reference: np.ndarray) -> dict[str, object]:
    """OpenVINO bf16 against the fp32 ``reference`` probabilities of ``inputs``, judged by the fp16 gate's thresholds.

    Measured with any earlier verdict of the manifest set aside (it would refuse bf16 before it ran) and a fresh
    compile cache (stored agreement figures of this machine are not this measurement).
    """
    from allbatch.backends.openvino_backend import OpenVinoBackend

    measured = copy.deepcopy(artifact)
    measured.manifest.validation.pop("openvino_bf16", None)
    with tempfile.TemporaryDirectory() as cache, OpenVinoBackend(measured, precision="bf16", cache_dir=Path(cache)) as backend:
        probs = np.concatenate([backend.infer(inputs[i : i + 16]).probs for i in range(0, len(inputs), 16)])
        cpu = backend.describe()["device"]
    figures = fp16_agreement(probs, reference)
    accepted, reason = judge_fp16(figures)
    return {**figures, "accepted": accepted, "reason": reason, "reference": "ONNX Runtime fp32", "device": cpu}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared/data/all-kaggle/Original")
    parser.add_argument("--stride", type=int, default=8, help="every k-th validation image")
    parser.add_argument(
        "--openvino", action="store_true", help="also OpenVINO bf16, its verdict into validation.openvino_bf16_probability_bound"
    )
    parser.add_argument("--write", action="store_true", help="store the figures in the manifest (validation.precision_cpu)")
    args = parser.parse_args()
    artifact = load_model_artifact(args.model)
    manifest = artifact.manifest
    files = list(manifest.training["val_files"])[:: args.stride]
    inputs = prepare_files([args.data / rel for rel in files], manifest.prep, manifest.seg)
    started = time.time()
    with OnnxRuntimeBackend(artifact) as backend:
        reference = np.concatenate([backend.infer(inputs[i : i + 8]).probs for i in range(0, len(inputs), 8)])
    net = ExportedNet(load_network(artifact.onnx_path, manifest.architecture), manifest.temperature).eval()
    report: dict[str, object] = {"reference": "ONNX Runtime fp32 (CPU)", "n": len(files), "stride": args.stride}
    half = copy.deepcopy(net).half()  # weights and activations in fp16, as the torch CUDA backend's fp16 runs
    for name, dtype in (("torch_cpu_bf16_autocast", torch.bfloat16), ("torch_cpu_fp16", torch.float16)):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            model = half if dtype == torch.float16 else net
            input_dtype = torch.float16 if dtype == torch.float16 else torch.float32
            batches = (torch.from_numpy(inputs[i : i + 8]).to(input_dtype) for i in range(0, len(inputs), 8))
            probs = np.concatenate([model(batch)[0].float().numpy() for batch in batches])
        figures = fp16_agreement(probs, reference)
        accepted, stated = judge_fp16(figures)
        report[name] = {**figures, "within_fp16_gate": accepted}
        print(name, stated, flush=True)
    verdict = openvino_bf16_verdict(artifact, inputs, reference) if args.openvino else None
    report["seconds"] = round(time.time() - started, 1)
    report["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report))
    if verdict is not None:
        print("openvino_bf16", json.dumps(verdict))
    if args.write:
        manifest.validation = {**manifest.validation, "precision_cpu": report}
        if verdict is not None:
            manifest.validation["openvino_bf16_probability_bound"] = verdict
        manifest_path_for(artifact.onnx_path).write_text(manifest.to_json() + "\n")


if __name__ == "__main__":
    main()
