"""The shipped model on the 8 shipped demo images: labels pinned exactly, probabilities within 1e-4.

The tolerance covers ONNX Runtime versions and CPU kernels (fp32 compute on fp16-stored weights);
regenerate with factory/scripts/make_golden.py whenever allbatch/engines/ changes (the sha256 check says so).
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from paths import DATA, REPO

from allbatch import CLASS_NAMES
from allbatch.model.manifest import DEFAULT_MODEL, load_model_artifact

GOLDEN = DATA / "golden_demo.json"
pytestmark = pytest.mark.skipif(not DEFAULT_MODEL.is_file(), reason="no shipped model in allbatch/engines/")


def test_golden_predictions_on_demo_images() -> None:
    sys.path.insert(0, str(REPO / "factory" / "scripts"))
    from make_golden import demo_predictions

    golden = json.loads(GOLDEN.read_text())
    assert golden["model_sha256"] == load_model_artifact().sha256, "allbatch/engines/ changed: run factory/scripts/make_golden.py"
    actual = demo_predictions()
    assert sorted(actual) == sorted(golden["predictions"])
    for path, expected in golden["predictions"].items():
        assert actual[path]["label"] == expected["label"], path
        np.testing.assert_allclose(actual[path]["probs"], expected["probs"], rtol=0, atol=1e-4, err_msg=path)


def test_shipped_model_classifies_the_demo_images() -> None:
    golden = json.loads(GOLDEN.read_text())
    correct = sum(CLASS_NAMES[p["label"]] == path.split("/")[0] for path, p in golden["predictions"].items())
    assert correct >= 7, f"only {correct}/8 demo images classified correctly"
