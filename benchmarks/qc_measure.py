"""Measure the quality flags (issue 11, point 2) with a model and the statistics in its manifest:

- the share of the validation part (manifest ``training.val_files``) that is flagged (target <= 3 %),
- the share of clearly out-of-distribution inputs that is flagged, per set (target >= 95 %): the
  scikit-image photographs, uniform colours and greys, grey smears, smears blurred with sigma 3, smears
  with the hue rotated by 90 degrees, 32 x 32 crops (tests/ood_factory.py makes them),
- the share of misclassified validation images that carries a flag.

    .venv/bin/python benchmarks/qc_measure.py --data ../shared/data/all-kaggle/Original \
        [--model engines/allbatch-densenet201.onnx] [--smears 30] [--val-cache v.npz] [--ood-cache o.npz] [--json out.json]

The model runs on the CPU (ONNX Runtime); the caches keep its outputs so that a re-fit of the statistics
can be measured again without running the model.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from allbatch import CLASS_NAMES
from allbatch.model.manifest import DEFAULT_MODEL, load_model_artifact
from allbatch.qc.flags import flag_words
from allbatch.qc.stage import QcStage
from factory.qc_collect import Collected, collect

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "support"))
from ood_factory import ood_sets


def flags_of(collected: Collected, stage: QcStage) -> np.ndarray:
    """(n,) uint16 flags of collected outputs, by the same code as the pipeline's qc stage."""
    out = stage.flag(dict(collected.measures), collected.features, collected.mask_fraction, collected.sizes)
    return np.asarray(out["flags"])


def rate(flags: np.ndarray) -> dict[str, Any]:
    flagged = int((flags != 0).sum())
    words: Counter[str] = Counter()
    for value in flags[flags != 0].tolist():
        words.update(flag_words(int(value)))
    return {"n": len(flags), "flagged": flagged, "share": round(flagged / max(1, len(flags)), 4), "by_flag": dict(words)}


def cached(path: Path | None, make: Any) -> Collected:
    if path is not None and path.exists():
        return Collected.load(path)
    collected: Collected = make()
    if path is not None:
        collected.save(path)
    return collected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--smears", type=int, default=30, help="validation smears per transformed set")
    parser.add_argument("--val-cache", type=Path)
    parser.add_argument("--ood-cache", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    artifact = load_model_artifact(args.model)
    manifest = artifact.manifest
    if not manifest.qc:
        raise SystemExit(f"{args.model} carries no qc statistics: run factory/scripts/fit_qc_stats.py first")
    stage = QcStage(manifest)
    val_files = list(manifest.training.get("val_files", []))
    started = time.perf_counter()
    val = cached(args.val_cache, lambda: collect([(name, (args.data / name).read_bytes()) for name in val_files], artifact))
    rng = np.random.default_rng(0)
    picks = sorted(rng.choice(len(val_files), size=min(args.smears, len(val_files)), replace=False).tolist())
    smears = [(Path(val_files[i]).name, np.asarray(Image.open(args.data / val_files[i]).convert("RGB"))) for i in picks]
    ood = cached(args.ood_cache, lambda: collect(ood_sets(smears), artifact))

    val_flags = flags_of(val, stage)
    truth = np.array([CLASS_NAMES.index(name.split("/")[0]) for name in val.names])
    wrong = val.probs.argmax(axis=1) != truth
    ood_flags = flags_of(ood, stage)
    sets = np.array([name.split("/")[0] for name in ood.names])
    report = {
        "model_sha256": artifact.sha256,
        "qc_fitted_on": manifest.qc.get("fitted_on", {}),
        "validation": rate(val_flags),
        "validation_accuracy": round(float(1 - wrong.mean()), 4),
        "misclassified": {**rate(val_flags[wrong]), "paths": [n for n, w in zip(val.names, wrong.tolist(), strict=True) if w]},
        "ood_all": rate(ood_flags),
        "ood": {name: rate(ood_flags[sets == name]) for name in sorted(set(sets.tolist()))},
        "ood_missed": [n for n, f in zip(ood.names, ood_flags.tolist(), strict=True) if not f],
        "seconds": round(time.perf_counter() - started, 1),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
