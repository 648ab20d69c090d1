"""Fit the quality-control statistics of a model on the training part of its data and store them in its
manifest's ``qc`` field (the ONNX file is not touched; its sha256 stays valid).

    .venv/bin/python -m factory.scripts.fit_qc_stats --data ../shared/data/all-kaggle/Original \
        [--model engines/allbatch-densenet201.onnx] [--cache /tmp/qc_train.npz] [--dry-run]

The training part is every image under DATA/<Class>/ that the manifest's ``training.val_files`` does not
list (the block split the model was trained with). The model runs on the CPU (ONNX Runtime), about
5 to 10 minutes for 2,060 images on two cores; ``--cache`` keeps its outputs for a re-fit.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from allbatch import CLASS_NAMES
from allbatch.input.discover import discover
from allbatch.model.manifest import DEFAULT_MODEL, load_model_artifact, manifest_path_for
from allbatch.qc.stats import parse_qc
from factory.qc_collect import Collected, collect
from factory.qc_fit import fit_qc


def training_part(data: Path, val_files: list[str]) -> list[tuple[str, Path, int]]:
    """(relpath, path, class index) of every development image not in ``val_files``."""
    held_out = set(val_files)
    out = []
    for item in discover(data, "follow"):
        folder = item.relpath.split("/")[0]
        if folder in CLASS_NAMES and item.relpath not in held_out:
            out.append((item.relpath, item.path, CLASS_NAMES.index(folder)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with <Class>/*.jpg development images")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument(
        "--cache", type=Path, help="npz of the model outputs (factory.qc_collect.Collected): read when it exists, else written"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the qc field's summary, do not write the manifest")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    artifact = load_model_artifact(args.model)
    manifest = artifact.manifest
    val_files = list(manifest.training.get("val_files", []))
    if not val_files:
        raise SystemExit(f"{args.model}: the manifest lists no training.val_files; cannot tell the training part")
    part = training_part(args.data, val_files)
    print(f"{len(part)} training images ({len(val_files)} validation images left out)")
    started = time.perf_counter()
    if args.cache is not None and args.cache.exists():
        collected = Collected.load(args.cache)
    else:
        items = [(relpath, path.read_bytes()) for relpath, path, _ in part]
        collected = collect(items, artifact, progress=lambda done, total: print(f"{done}/{total}", flush=True) if done % 256 < 32 else None)
        if args.cache is not None:
            collected.save(args.cache)
    by_name = {relpath: label for relpath, _, label in part}
    missing = [name for name in collected.names if name not in by_name]
    if missing:
        raise SystemExit(f"the cache holds images outside the training part, e.g. {missing[0]}")
    labels = np.array([by_name[name] for name in collected.names], dtype=np.int64)
    fitted_on = {
        "part": "train",
        "data_manifest_sha256": manifest.training.get("data_manifest_sha256", ""),
        "split_rule": manifest.training.get("split_rule", ""),
        "model_sha256": artifact.sha256,
        "backend": "onnxruntime",
        "training_part_images": len(part),  # n below is how many of them the statistics used
    }
    qc = fit_qc(collected, labels, len(CLASS_NAMES), fitted_on)
    print(f"fitted on {len(labels)} images in {time.perf_counter() - started:.0f} s")
    stats = parse_qc(qc, manifest.num_features, len(CLASS_NAMES)) if qc else None
    for rule in stats.describe() if stats is not None else []:
        print(f"  {rule['flag']:>13}: {rule['measure']} {rule['side']} {rule['threshold']:.4g} ({rule['source']})")
    if args.dry_run:
        return
    manifest_file = manifest_path_for(artifact.onnx_path)
    data = json.loads(manifest_file.read_text(encoding="utf-8"))
    data["qc"] = qc
    manifest_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"qc statistics -> {manifest_file} ({manifest_file.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
