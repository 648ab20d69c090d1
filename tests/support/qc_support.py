"""Shared helpers for the quality-control tests."""

from __future__ import annotations

import numpy as np

from allbatch.prepare.preprocessing import Preprocessing

PREP = Preprocessing(blank_bottom_fraction=0.25)
"""The preprocessing the measure tests use (a wide blanked band, so that leaving it out shows)."""


def model_inputs(originals: np.ndarray, segmented: np.ndarray, prep: Preprocessing = PREP) -> np.ndarray:
    """(N, S, S, 3) uint8 pairs -> (N, 2, 3, S, S) float32 model input, normalised as ``prep`` says."""
    pair = np.stack([originals, segmented], axis=1).astype(np.float32)  # (N, 2, S, S, 3)
    return np.ascontiguousarray(((pair / 255.0 - prep.mean) / prep.std).transpose(0, 1, 4, 2, 3)).astype(np.float32)
