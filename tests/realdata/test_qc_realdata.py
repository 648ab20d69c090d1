"""Issue 11, point 2, with the shipped model and the statistics in its manifest, on real smears: few
validation images flagged, nearly every clearly out-of-distribution input flagged (tests/ood_factory.py).

The whole validation part (496 images: a sample of 124 flagged 3.2 % where the whole part flags 2.4 %, so a
sample is too noisy for a 3 % bound) and the out-of-distribution sets made from 8 of its smears (104 inputs):
about 2.5 minutes of model time on two quiet cores. benchmarks/qc_measure.py gives the same figures with
30 smears per set; they are in the README.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ood_factory import ood_sets
from paths import require_dataset
from PIL import Image

from allbatch.model.manifest import load_model_artifact
from allbatch.qc.stage import QcStage
from factory.qc_collect import collect


@pytest.fixture(scope="module")
def data_root() -> Path:
    return require_dataset() / "Original"


@pytest.mark.realdata
@pytest.mark.slow
def test_flags_spare_validation_smears_and_catch_foreign_inputs(data_root: Path) -> None:
    artifact = load_model_artifact()
    if not artifact.manifest.qc:
        pytest.fail("the shipped model's manifest carries no qc statistics (factory/scripts/fit_qc_stats.py)")
    stage = QcStage(artifact.manifest)
    val_files = list(artifact.manifest.training["val_files"])
    val = collect([(name, (data_root / name).read_bytes()) for name in val_files], artifact, threads=1)
    val_flags = np.asarray(stage.flag(dict(val.measures), val.features, val.mask_fraction, val.sizes)["flags"])
    smears = [(Path(name).name, np.asarray(Image.open(data_root / name).convert("RGB"))) for name in val_files[::62]]
    ood = collect(ood_sets(smears), artifact, threads=1)
    ood_flags = np.asarray(stage.flag(dict(ood.measures), ood.features, ood.mask_fraction, ood.sizes)["flags"])

    assert len(val.names) == len(val_files) == 496
    assert (val_flags != 0).mean() <= 0.03, [n for n, f in zip(val.names, val_flags.tolist(), strict=True) if f]
    assert (ood_flags != 0).mean() >= 0.95, [n for n, f in zip(ood.names, ood_flags.tolist(), strict=True) if not f]
    sets = np.array([name.split("/")[0] for name in ood.names])
    for name in sorted(set(sets.tolist())):
        # every kind of foreign input is caught: at most one miss in a set of 8 (the overall target above is
        # what issue 11 asks). With the stain-hue colour rule and the H200-trained model of issue 10 none is
        # missed here, and 0 of 30 of each set in benchmarks/qc_measure.py; before the stain hue, up to 2 of
        # the 8 hue-rotated smears passed with a colour-augmented model
        missed = int((ood_flags[sets == name] == 0).sum())
        assert missed <= 1, (name, missed)
