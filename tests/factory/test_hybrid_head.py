"""Hybrid-head fitting pieces: the cached pixels give the model inputs back exactly, a relieved penalty lets a block
of features carry more weight, and block ids group by (class, block)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="the head fit needs torch")

from paths import DEMO

from allbatch.model.manifest import load_model_artifact
from allbatch.prepare.recipe import prepare_files
from factory.hybrid_head import block_groups, figures
from factory.part_outputs import inputs_to_pixels, pixels_to_inputs
from factory.training.head_refit import fit_linear_head


def test_cached_pixels_give_the_inputs_back_exactly() -> None:
    manifest = load_model_artifact().manifest
    inputs = prepare_files(sorted(DEMO.glob("*/*.jpg"))[:2], manifest.prep, manifest.seg)
    pixels = inputs_to_pixels(inputs, manifest.prep)
    assert pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels_to_inputs(pixels, manifest.prep), inputs)


def test_relieved_penalty_gives_a_feature_block_more_weight() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 400)
    noise = rng.normal(0, 1, (400, 40))
    informative = (np.eye(4)[labels] @ rng.normal(0, 1, (4, 2)) + rng.normal(0, 1.0, (400, 2))).astype(np.float32)
    x = np.concatenate([noise, informative], axis=1).astype(np.float32)
    relief = np.ones(42, dtype=np.float32)
    relief[40:] = 0.01
    plain, _ = fit_linear_head(x, labels, 4, 0.3, 200)
    relieved, _ = fit_linear_head(x, labels, 4, 0.3, 200, relief)
    assert np.abs(relieved[:, 40:]).sum() > 2 * np.abs(plain[:, 40:]).sum()


def test_block_groups_and_figures() -> None:
    groups = block_groups(np.array([[0, 1], [0, 1], [1, 1], [0, 2]]))
    assert groups.tolist() == [0, 0, 2, 1]
    result = figures(np.array([0, 1, 2, 3]), np.eye(4)[[0, 1, 2, 0]] * 5.0)
    assert result["errors"] == 1 and result["benign_called_benign"] == 1.0
    assert result["all_called_all"] == pytest.approx(0.66667)  # the Pro image called Benign
