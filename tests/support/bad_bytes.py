"""Damaged image bytes that only a decoder finds: a truncated JPEG, random bytes, a PNG with garbage pixel data."""

from __future__ import annotations

import numpy as np
from image_factory import encode, smear_like


def truncated_jpeg(seed: int = 0) -> bytes:
    data = encode(smear_like(seed), "JPEG", quality=92)
    return data[: len(data) // 2]


def random_bytes(seed: int = 1) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, 5000, dtype=np.uint8).tobytes()


def corrupt_png(seed: int = 2) -> bytes:
    """A PNG whose header is intact but whose compressed pixel data is garbage: only decoding finds it."""
    data = bytearray(encode(smear_like(seed), "PNG"))
    start = data.index(b"IDAT") + 20
    for k in range(start, start + 180):
        data[k] ^= 0x5A
    return bytes(data)
