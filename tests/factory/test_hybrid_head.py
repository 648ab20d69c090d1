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


def test_hybrid_fit_moves_the_standardisation_into_the_graph_without_changing_the_logits() -> None:
    from factory.hybrid_head import fit_hybrid
    from factory.training.head_refit import HeadRefitConfig

    rng = np.random.default_rng(5)
    labels = rng.integers(0, 4, 240)
    features = rng.normal(0, 1, (240, 16)).astype(np.float32)
    statistics = (np.eye(4)[labels] @ rng.normal(0, 1, (4, 6)) * 0.01 + 0.5 + rng.normal(0, 0.01, (240, 6))).astype(np.float32)
    statistics[:, 5] = 0.25  # constant on train, as the empty histogram bins are
    groups = np.arange(240) // 10
    fit = fit_hybrid(features, statistics, labels, groups, HeadRefitConfig(weight_decays=(0.01,), folds=3), (0.1,))
    design = np.concatenate([features, statistics], axis=1)
    penalty = np.ones(22, dtype=np.float32)
    penalty[16:] = 0.1
    raw_weight, raw_bias = fit_linear_head(design, labels, 4, 0.01, 300, penalty)
    expected = design.astype(np.float64) @ raw_weight.T + raw_bias
    np.testing.assert_allclose(fit.head.logits(fit.design(features, statistics)), expected, rtol=1e-4, atol=1e-3)
    assert np.abs(fit.head.weight[:, 16:]).max() < 100  # standardised-space weights: safe in the fp16 ONNX
