"""Synthetic inputs for tests and benchmarks: smear-like JPEGs and every kind of bad file."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def smear_like(seed: int, size: tuple[int, int] = (224, 224)) -> np.ndarray:
    """(H, W, 3) uint8: pale background with a few purple (blast-coloured) blobs, so masks are non-empty."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.empty((h, w, 3), dtype=np.float32)
    img[:] = (225, 215, 230)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(3):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.08, 0.2) * min(h, w)
        blob = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        img[blob] = (120 + rng.uniform(-20, 20), 60 + rng.uniform(-20, 20), 160 + rng.uniform(-20, 20))
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def encode(array: np.ndarray, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def exif_rotated_jpeg(seed: int, size: tuple[int, int] = (200, 260), orientation: int = 6) -> bytes:
    """A smear-like JPEG stored ``size`` (H, W) with an EXIF orientation tag (6: shown rotated 90 degrees clockwise,
    so the decoded image is W x H where the header says H x W)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(smear_like(seed, size)).save(buf, format="JPEG", quality=90, exif=exif)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height with no real pixel data (for the too-large check)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


def write_bad_files(folder: Path) -> dict[str, str]:
    """Write one file of each troublesome kind; returns {relative path: expected status name}."""
    folder.mkdir(parents=True, exist_ok=True)
    good = encode(smear_like(99), "JPEG", quality=92)
    cases: dict[str, tuple[bytes | None, str]] = {
        "bad/zero_byte.jpg": (b"", "empty"),
        "bad/truncated.jpg": (good[: len(good) // 2], "decode_error"),
        "bad/random_bytes.jpg": (np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes(), "decode_error"),
        "bad/text_as.png": (b"this is not an image\n" * 20, "decode_error"),
        "bad/claims_huge.png": (png_header_only(60000, 60000), "too_large"),
        "odd/png_named.jpg": (encode(smear_like(5), "PNG"), "ok"),
        "odd/grayscale.jpg": (encode(smear_like(6)[..., 0], "JPEG"), "ok"),
        "odd/cmyk.jpg": (_cmyk_jpeg(smear_like(7)), "ok"),
        "odd/gray16.png": (_png16(), "ok"),
        "odd/rgba.png": (encode(np.dstack([smear_like(8), np.full((224, 224), 200, np.uint8)]), "PNG"), "ok"),
        "odd/one_pixel.png": (encode(np.array([[[200, 100, 180]]], dtype=np.uint8), "PNG"), "ok"),
        "odd/big_field.jpg": (encode(smear_like(9, (1536, 2048)), "JPEG", quality=85), "ok"),
        "odd/tiled.tif": (encode(smear_like(10), "TIFF"), "ok"),
        "odd/plain.bmp": (encode(smear_like(11), "BMP"), "ok"),
    }
    expected = {}
    for relpath, (data, status) in cases.items():
        path = folder / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            path.write_bytes(data)
        expected[relpath] = status
    dangling = folder / "bad" / "dangling_link.jpg"
    os.symlink(folder / "does-not-exist.jpg", dangling)
    expected["bad/dangling_link.jpg"] = "unreadable"
    return expected


def write_good_images(folder: Path, n: int, start: int = 0) -> list[str]:
    """n smear-like JPEGs named img<k>.jpg in ``folder``; returns their relative names."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(start, start + n):
        name = f"img{k}.jpg"
        (folder / name).write_bytes(encode(smear_like(k), "JPEG", quality=90))
        names.append(name)
    return names


def _cmyk_jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(buf, format="JPEG")
    return buf.getvalue()


def _png16() -> bytes:
    ramp = (np.linspace(0, 65535, 224 * 224).reshape(224, 224)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    return buf.getvalue()
