"""Run the model once over the train and selection parts and keep the outputs (``factory.part_outputs``).

Never touches the test part: everything fitted or chosen from this cache is chosen on train or selection.
Jobs, in order: selection plain (fp32), train plain (fp32), selection plain (OpenVINO bf16, for the precision
gate), selection under each robustness perturbation (fp32). A job whose file exists is skipped.

Usage: python -m factory.scripts.cache_part_outputs [--model ...] [--data ...] [--out /tmp/model-test-cache] [--only JOB ...]
"""

from __future__ import annotations

import argparse
import copy
import logging
import time
from pathlib import Path

from allbatch.backends.openvino_backend import OpenVinoBackend
from allbatch.model.manifest import load_model_artifact
from factory.part_outputs import run_part
from factory.robustness import PERTURBATIONS
from factory.training.data import list_development_images
from factory.training.split import three_way_split

log = logging.getLogger("factory.scripts.cache_part_outputs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[3] / "shared/data/all-kaggle/Original")
    parser.add_argument("--out", type=Path, default=Path("/tmp/model-test-cache"))
    parser.add_argument("--only", nargs="*", default=None, help="job names (default: all)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    artifact = load_model_artifact(args.model)
    manifest = artifact.manifest
    split = three_way_split(list_development_images(args.data))
    jobs = [("selection", "plain", "fp32"), ("train", "plain", "fp32"), ("selection", "plain", "bf16")]
    jobs += [("selection", name, "fp32") for name in PERTURBATIONS]
    for part, condition, precision in jobs:
        name = f"{part}-{condition}-{precision}"
        path = args.out / f"{name}.npz"
        if path.exists() or (args.only is not None and name not in args.only):
            continue
        measured = copy.deepcopy(artifact)
        measured.manifest.validation.pop("openvino_bf16", None)  # measure bf16 itself, not the recorded refusal
        started = time.time()
        with OpenVinoBackend(measured, precision=precision, cache_dir=args.out / "openvino") as backend:
            change = PERTURBATIONS.get(condition)
            outputs = run_part(split.part(part), args.data, backend, manifest.prep, manifest.seg, change)
        outputs.backend = f"openvino {precision}"
        outputs.save(path)
        log.info("%s: %d images in %.0f s -> %s", name, len(outputs.names), time.time() - started, path)


if __name__ == "__main__":
    main()
