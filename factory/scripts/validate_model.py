"""Validation figures of a trained model (issue "Train the reference model"), written into its manifest.

On the block-split validation part named in the manifest (training.val_files), with ONNX Runtime:
- accuracy, macro sensitivity, per-class sensitivity, confusion matrix (the committed fp16-weight ONNX);
- the same with the bottom 48 rows blanked at inference (the scale-bar label shortcut check);
- the same with the JPEGs decoded as nvJPEG (the GPU path) decodes them, with simple chroma upsampling, and
  the label agreement with the plain (Pillow) decode: how far GPU and CPU results of a model can differ;
- FP16-vs-FP32 agreement: the committed ONNX (fp16 weights) against an fp32-weight export of the same
  checkpoint (argmax agreement, max abs probability difference), or against fp32 logits computed where the
  checkpoint is (``--fp32-logits``, from ``factory/scripts/fp32_reference.py``: a checkpoint trained on a lent GPU
  does not come back).

Usage: python -m factory.scripts.validate_model [--model allbatch/engines/allbatch-densenet201.onnx] [--checkpoint runs/train/best.pt]
       [--fp32-logits fp32_logits.npz] [--data ../shared/data/all-kaggle/Original] [--write]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from allbatch import CLASS_NAMES
from allbatch.backends.ort_backend import OnnxRuntimeBackend
from allbatch.input.decode import decode_rgb_simple_upsampling
from allbatch.model.manifest import ModelArtifact, ModelManifest, load_model_artifact, manifest_path_for, sha256_of_file
from allbatch.prepare.recipe import prepare_files, prepare_rgb, read_rgb
from factory.calibration import softmax
from factory.training.augment import blank_bottom

VARIANTS = ("plain", "bottom48_blanked", "simple_chroma_upsampling")
"""Stain and camera changes: factory/scripts/robustness.py (the robustness suite)."""


def inputs_for(paths: list[Path], artifact: ModelArtifact, variant: str) -> np.ndarray:
    """(n, 2, 3, S, S) float32 model inputs through the one recipe; "bottom48_blanked" fills the bottom 48 rows
    of the decoded original with its median colour first (before the model's own band blanking);
    "simple_chroma_upsampling" decodes as nvJPEG does (``decode_rgb_simple_upsampling``)."""
    prep, seg = artifact.manifest.prep, artifact.manifest.seg
    if variant == "plain":
        return prepare_files(paths, prep, seg)
    if variant == "simple_chroma_upsampling":
        return np.stack([prepare_rgb(decode_rgb_simple_upsampling(path.read_bytes()), prep, seg).inputs for path in paths])
    return np.stack([prepare_rgb(blank_bottom(read_rgb(path), 48), prep, seg).inputs for path in paths])


def predict(artifact: ModelArtifact, inputs: np.ndarray, batch: int = 32) -> np.ndarray:
    with OnnxRuntimeBackend(artifact) as backend:
        return np.concatenate([backend.infer(inputs[i : i + batch]).probs for i in range(0, len(inputs), batch)])


def metrics(truth: np.ndarray, probs: np.ndarray) -> dict[str, object]:
    k = len(CLASS_NAMES)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (truth, probs.argmax(1)), 1)
    recall = confusion.diagonal() / confusion.sum(1)
    return {
        "n": len(truth),
        "accuracy": round(float(confusion.trace() / confusion.sum()), 5),
        "macro_sensitivity": round(float(recall.mean()), 5),
        "sensitivity": {name: round(float(r), 5) for name, r in zip(CLASS_NAMES, recall, strict=True)},
        "confusion": confusion.tolist(),
    }


def fp32_artifact(checkpoint: Path, manifest: ModelManifest, folder: Path) -> ModelArtifact:
    """The same checkpoint exported with float32 weights (the reference for the fp16 agreement)."""
    import onnx
    import torch

    from allbatch.model.config import ModelConfig
    from allbatch.model.network import TwoChannelNet
    from allbatch.model.onnx_io import export_fp32_onnx, strip_debug_metadata

    net = TwoChannelNet(ModelConfig.from_dict(manifest.architecture))
    net.load_state_dict(torch.load(checkpoint, map_location="cpu"))
    path = folder / "fp32.onnx"
    export_fp32_onnx(net.eval(), path, manifest.prep.size, manifest.temperature)  # the same temperature as the compared graph
    model = onnx.load(str(path))
    strip_debug_metadata(model)
    onnx.save(model, str(path))
    copy = ModelManifest.from_json(manifest.to_json())
    copy.onnx_sha256 = sha256_of_file(path)
    manifest_path_for(path).write_text(copy.to_json())
    return load_model_artifact(path)


def reference_probs(path: Path, val_files: list[str], temperature: float) -> tuple[np.ndarray, str]:
    """(n, C) float32 probabilities of fp32 reference logits (temperature 1, as ``fp32_reference.py`` saves
    them) at the manifest's ``temperature``, checked to be of the same validation files in the same order, and
    the device they were computed on."""
    saved = np.load(path)
    if saved["val_files"].tolist() != val_files:
        raise SystemExit(f"{path}: its validation files are not the manifest's")
    return softmax(saved["logits"] / temperature).astype(np.float32), str(saved["device"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/train/best.pt"))
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared/data/all-kaggle/Original")
    parser.add_argument("--fp32-logits", type=Path, default=None, help="fp32 reference logits (factory/scripts/fp32_reference.py)")
    parser.add_argument("--write", action="store_true", help="store the figures in the manifest's validation field")
    args = parser.parse_args()
    artifact = load_model_artifact(args.model)
    manifest = artifact.manifest
    val_files = [args.data / rel for rel in manifest.training["val_files"]]
    truth = np.array([CLASS_NAMES.index(Path(rel).parts[0]) for rel in manifest.training["val_files"]])
    report: dict[str, object] = {"measured_on": "ONNX Runtime CPU", "split_rule": manifest.training.get("split_rule")}
    started = time.time()
    plain_inputs = None
    probs: dict[str, np.ndarray] = {}
    for variant in VARIANTS:
        inputs = inputs_for(val_files, artifact, variant)
        plain_inputs = inputs if variant == "plain" else plain_inputs
        probs[variant] = predict(artifact, inputs)
        report[variant] = metrics(truth, probs[variant])
        print(variant, json.dumps({k: v for k, v in report[variant].items() if k != "confusion"}))  # type: ignore[attr-defined]
    assert plain_inputs is not None
    simple, plain = probs["simple_chroma_upsampling"], probs["plain"]
    report["simple_chroma_upsampling_vs_plain"] = {
        "label_agreement": float((simple.argmax(1) == plain.argmax(1)).mean()),
        "max_abs_prob_diff": float(np.abs(simple - plain).max()),
        "n": len(plain),
    }
    print("simple vs fancy chroma upsampling", report["simple_chroma_upsampling_vs_plain"])
    fp32: np.ndarray | None = None
    if args.fp32_logits is not None:
        fp32, device = reference_probs(args.fp32_logits, list(manifest.training["val_files"]), manifest.temperature)
        reference_name = f"fp32 logits from {args.fp32_logits.name} ({device})"
    elif args.checkpoint.is_file():
        with tempfile.TemporaryDirectory() as tmp:
            fp32 = predict(fp32_artifact(args.checkpoint, manifest, Path(tmp)), plain_inputs)
        reference_name = "fp32-weight export of the checkpoint, ONNX Runtime"
    if fp32 is not None:
        fp16 = plain  # the committed artifact on the plain inputs, predicted above
        report["fp16_weights_vs_fp32"] = {
            "argmax_agreement": float((fp16.argmax(1) == fp32.argmax(1)).mean()),
            "max_abs_prob_diff": float(np.abs(fp16 - fp32).max()),
            "n": len(fp16),
            "reference": reference_name,
        }
        print("fp16 vs fp32", report["fp16_weights_vs_fp32"])
    report["seconds"] = round(time.time() - started, 1)
    if args.write:
        manifest.validation = {**manifest.validation, "onnx_runtime": report}
        manifest_path_for(artifact.onnx_path).write_text(manifest.to_json() + "\n")
        print("written to", manifest_path_for(artifact.onnx_path))


if __name__ == "__main__":
    main()
