"""Quantise the model to int8 with OpenVINO NNCF and put it through the int8 accuracy gate (issue 14, point 2).

Post-training static quantisation (``nncf.quantize``, default preset) calibrated on development images that
are NOT in the validation part (spread evenly over the training part), then both the fp32 and the int8 model
(OpenVINO, fp32 inference precision so only the quantisation differs) classify the validation part named in
the manifest (training.val_files). The gate (``factory.int8_gate``): label agreement with fp32
>= 99.5 % and validation accuracy drop <= 0.2 points. The int8 IR is written only when accepted; the figures
and the verdict always are (JSON).

Usage: python -m factory.scripts.quantize_int8 [--model PATH] [--data ../shared/data/all-kaggle/Original]
       [--calibration 300] --out DIR
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from allbatch import CLASS_NAMES
from allbatch.environment.cpu_features import cpu_features
from allbatch.model.manifest import load_model_artifact
from allbatch.prepare.recipe import prepare_files
from factory.int8_gate import INT8_MAX_ACCURACY_DROP, INT8_MIN_LABEL_AGREEMENT, int8_figures, judge_int8


def classify(compiled, inputs: np.ndarray, batch: int = 16) -> np.ndarray:  # type: ignore[no-untyped-def]
    request = compiled.create_infer_request()
    parts = []
    for start in range(0, len(inputs), batch):
        request.infer({0: inputs[start : start + batch]})
        parts.append(np.array(request.get_tensor("probs").data))
    return np.concatenate(parts)


def main() -> None:
    import nncf
    import openvino as ov

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared/data/all-kaggle/Original")
    parser.add_argument("--calibration", type=int, default=300, help="calibration images (NNCF's default subset size)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    artifact = load_model_artifact(args.model)
    val_rel = list(artifact.manifest.training["val_files"])
    val_set = set(val_rel)
    train = sorted(p for p in args.data.rglob("*.jpg") if str(p.relative_to(args.data)) not in val_set)
    picks = np.linspace(0, len(train) - 1, num=min(args.calibration, len(train))).round().astype(int)
    started = time.time()
    calibration = prepare_files([train[i] for i in picks], artifact.manifest.prep, artifact.manifest.seg)
    validation = prepare_files([args.data / rel for rel in val_rel], artifact.manifest.prep, artifact.manifest.seg)
    truth = np.array([CLASS_NAMES.index(Path(rel).parts[0]) for rel in val_rel])
    print(f"prepared {len(calibration)} calibration and {len(validation)} validation images in {time.time() - started:.0f} s", flush=True)

    core = ov.Core()
    model = core.read_model(str(artifact.onnx_path))
    quantized = nncf.quantize(model, nncf.Dataset(list(calibration), lambda x: x[None]), subset_size=len(calibration))
    print(f"quantised after {time.time() - started:.0f} s", flush=True)
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}  # one request uses every core
    fp32 = classify(core.compile_model(model, "CPU", config), validation)
    int8_compiled = core.compile_model(quantized, "CPU", config)
    int8 = classify(int8_compiled, validation)
    figures = int8_figures(int8, fp32, truth)
    accepted, reason = judge_int8(figures)
    batch = validation[:16]
    speed: dict[str, list[float]] = {}
    for _ in range(2):  # paired, alternating: fp32 then int8 on the same batch
        for name, compiled in (("fp32", core.compile_model(model, "CPU", config)), ("int8", int8_compiled)):
            tic = time.perf_counter()
            classify(compiled, batch)
            speed.setdefault(name, []).append(len(batch) / (time.perf_counter() - tic))
    cpu = cpu_features()
    report = {
        **figures,
        "accepted": accepted,
        "reason": reason,
        "thresholds": {"min_label_agreement": INT8_MIN_LABEL_AGREEMENT, "max_accuracy_drop": INT8_MAX_ACCURACY_DROP},
        "quantiser": f"nncf {nncf.__version__} quantize (post-training, default preset), openvino {ov.get_version()}",
        "calibration_images": len(calibration),
        "reference": "the same ONNX compiled by OpenVINO, fp32 inference precision",
        "images_per_s_batch16": {name: [round(v, 2) for v in values] for name, values in speed.items()},
        "cpu": {"model": cpu.model, "isa": cpu.isa_summary(), "vnni": cpu.vnni},
        "seconds": round(time.time() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    if accepted:
        ov.save_model(quantized, str(args.out / "allbatch-densenet201-int8.xml"))
    (args.out / "int8-gate.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
