"""Regenerate tests/data/golden_demo.json: the shipped model's output on the 8 shipped demo images.

Run after replacing the model in allbatch/engines/ (ONNX Runtime, CPU decoder). The golden test compares
labels exactly and probabilities within its stated tolerance.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import h5py

from allbatch.cli.run_cmd import DEMO_DIR
from allbatch.model.manifest import load_model_artifact
from allbatch.run.config import RunConfig
from allbatch.run.engine import run

GOLDEN = Path(__file__).resolve().parents[2] / "tests" / "data" / "golden_demo.json"


def demo_predictions() -> dict[str, dict[str, object]]:
    """{relative path: {"label": int, "probs": [4 floats]}} from a real run over the demo images."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "demo.h5"
        run(RunConfig(source=DEMO_DIR, output=out, backend="onnxruntime", decoder="cpu", batch_size=8))
        with h5py.File(out, "r") as f:
            n = int(f["meta/n_committed"][0])
            paths = [p.decode() if isinstance(p, bytes) else str(p) for p in f["images/path"][:n]]
            return {
                path: {"label": int(f["pred/label"][i]), "probs": [round(float(p), 6) for p in f["pred/probs"][i]]}
                for i, path in enumerate(paths)
            }


def main() -> None:
    artifact = load_model_artifact()
    golden = {"model_sha256": artifact.sha256, "predictions": demo_predictions()}
    GOLDEN.write_text(json.dumps(golden, indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")


if __name__ == "__main__":
    main()
