"""Shared helpers for the segmentation tests: the authors' OpenCV calls, and choosing ``segment``'s implementation."""

from __future__ import annotations

import numpy as np
import pytest

import allbatch.prepare.segment as segment_module

IMPLEMENTATIONS = ("opencv", "numpy")
"""``segment`` runs through OpenCV where it is installed and through the NumPy port where it is not."""


def opencv_reference(bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The authors' calls on a BGR array: (masked HSV as stored in their JPEG read as RGB, mask)."""
    import cv2

    hsv = cv2.cvtColor(bgr, cv2.COLOR_RGB2HSV)
    mask = cv2.inRange(hsv, (168, 50, 50), (182, 255, 255))
    masked = cv2.bitwise_and(hsv, hsv, mask=mask)
    return masked[..., ::-1], mask > 0


def use_implementation(name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Make ``segment`` run through ``name`` ("opencv" or "numpy") for the calling test; returns ``name``."""
    if name == "numpy":
        monkeypatch.setattr(segment_module, "opencv", lambda: None)
    else:
        import cv2

        assert segment_module.opencv() is cv2
    return name
