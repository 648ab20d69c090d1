"""A deterministic fuzz corpus of hostile image files (issue 9): every run generates the same bytes.

``fuzz_corpus()`` returns {name: (bytes, expectation)}; expectation is "never_ok" for files that hold
no usable image (the decoders must refuse them), a status name where it is known, or "any" where a
mutation may or may not leave a decodable image (then only agreement between decoders is checked).
The name's extension is what a user would see (wrong extensions on purpose).
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from image_factory import encode, png_header_only, smear_like
from PIL import Image

BIT_FLIP_SEEDS = range(24)
TRUNCATE_FRACTIONS = (0.05, 0.3, 0.6, 0.9, 0.99)


def _save(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _bases() -> dict[str, bytes]:
    """Valid files of every supported format and the pixel modes users meet."""
    rgb = smear_like(21, (96, 128))
    image = Image.fromarray(rgb)
    ramp16 = (np.linspace(0, 65535, 96 * 128).reshape(96, 128)).astype(np.uint16)
    return {
        "baseline.jpg": encode(rgb, "JPEG", quality=90),
        "progressive.jpg": encode(rgb, "JPEG", quality=85, progressive=True),
        "grey.jpg": encode(rgb[..., 1], "JPEG", quality=90),
        "cmyk.jpg": _save(image.convert("CMYK"), "JPEG"),
        "rgb.png": encode(rgb, "PNG"),
        "rgba.png": encode(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)]), "PNG"),
        "palette.png": _save(image.convert("P"), "PNG"),
        "grey16.png": _save(Image.fromarray(ramp16), "PNG"),
        "bilevel.png": _save(image.convert("1"), "PNG"),
        "rgb.tif": encode(rgb, "TIFF"),
        "deflate.tif": _save(image, "TIFF", compression="tiff_adobe_deflate"),
        "rgb.bmp": encode(rgb, "BMP"),
    }


def _odd_modes() -> dict[str, tuple[bytes, str]]:
    """Containers we read with content we refuse, and other formats behind image extensions."""
    rgb = smear_like(22, (64, 64))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nnewpath 0 0 moveto 64 64 lineto stroke\nshowpage\n"
    return {
        "float32.tif": (_save(Image.fromarray(np.ones((32, 32), np.float32)), "TIFF"), "unsupported"),
        "int32.tif": (_save(Image.fromarray(np.arange(1024, dtype=np.int32).reshape(32, 32) * 4096), "TIFF"), "unsupported"),
        "eps_named.jpg": (eps, "unsupported"),
        "gif_named.png": (encode(rgb, "GIF"), "unsupported"),
        "webp_named.jpg": (encode(rgb, "WEBP"), "unsupported"),
        "jpeg2000_named.tif": (encode(rgb, "JPEG2000"), "unsupported"),
        "ppm_named.bmp": (encode(rgb, "PPM"), "unsupported"),
        "bilevel.tif": (_save(Image.fromarray(rgb).convert("1"), "TIFF"), "unsupported"),
        "ycbcr.tif": (_save(Image.fromarray(rgb).convert("YCbCr"), "TIFF"), "unsupported"),
        "grey16.tif": (_save(Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)), "TIFF"), "ok"),
        "cmyk.tif": (_save(Image.fromarray(rgb).convert("CMYK"), "TIFF"), "ok"),
        "palette.tif": (_save(Image.fromarray(rgb).convert("P"), "TIFF"), "ok"),
        "jpeg_in.tif": (_save(Image.fromarray(rgb), "TIFF", compression="jpeg"), "ok"),
        "la.png": (_save(Image.fromarray(rgb).convert("LA"), "PNG"), "ok"),
        "bilevel.bmp": (_save(Image.fromarray(rgb).convert("1"), "BMP"), "ok"),
        "png_named.jpg": (encode(rgb, "PNG"), "ok"),
        "jpeg_named.png": (encode(rgb, "JPEG"), "ok"),
        "text.jpg": (b"this is not an image\n" * 10, "decode_error"),
        "empty.png": (b"", "empty"),
    }


def _jpeg_lies(base: bytes) -> dict[str, tuple[bytes, str]]:
    """JPEGs whose structure lies: huge claimed size, no scan data, truncation padded with zeros."""
    sof = base.index(b"\xff\xc0")
    huge = bytearray(base)
    huge[sof + 5 : sof + 9] = struct.pack(">HH", 10000, 10000)
    sos = base.index(b"\xff\xda")
    no_scan = base[:sos] + b"\xff\xd9"
    zero_height = bytearray(base)
    zero_height[sof + 5 : sof + 7] = b"\x00\x00"
    return {
        "lie/claims_10000x10000.jpg": (bytes(huge), "decode_error"),
        "lie/no_scan_data.jpg": (no_scan, "decode_error"),
        "lie/sos_then_eoi.jpg": (base[: sos + 20] + b"\xff\xd9", "decode_error"),
        "lie/zero_height.jpg": (bytes(zero_height), "never_ok"),
        "lie/cut_then_zeros.jpg": (base[: len(base) // 3] + b"\x00" * 200_000, "decode_error"),
        "lie/cut_then_eoi.jpg": (base[: len(base) // 2] + b"\xff\xd9", "decode_error"),
    }


def _png_lies() -> dict[str, tuple[bytes, str]]:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    real = encode(smear_like(23, (32, 32)), "PNG")
    ihdr_end = 8 + 8 + 13 + 4
    lied = real[:8] + chunk(b"IHDR", struct.pack(">IIBBBBB", 9000, 9000, 8, 2, 0, 0, 0)) + real[ihdr_end:]
    return {
        "lie/png_claims_9000x9000.png": (lied, "never_ok"),
        "lie/png_header_only_huge.png": (png_header_only(60000, 60000), "too_large"),
    }


def _bit_flips(name: str, base: bytes) -> dict[str, tuple[bytes, str]]:
    out = {}
    stem, ext = name.rsplit(".", 1)
    for seed in BIT_FLIP_SEEDS:
        rng = np.random.default_rng(seed)
        data = bytearray(base)
        for _ in range(1 + seed % 4):
            position = int(rng.integers(min(32, len(data) - 1), len(data)))
            data[position] ^= 1 << int(rng.integers(0, 8))
        out[f"flip/{stem}_{seed:02d}.{ext}"] = (bytes(data), "any")
    return out


def _truncations(name: str, base: bytes) -> dict[str, tuple[bytes, str]]:
    stem, ext = name.rsplit(".", 1)
    return {f"cut/{stem}_{int(f * 100):02d}.{ext}": (base[: int(len(base) * f)], "never_ok") for f in TRUNCATE_FRACTIONS}


def fuzz_corpus() -> dict[str, tuple[bytes, str]]:
    """{relative path: (bytes, expectation)}, the same on every call."""
    corpus: dict[str, tuple[bytes, str]] = {}
    bases = _bases()
    for name, data in bases.items():
        corpus[f"base/{name}"] = (data, "ok")
        corpus.update(_truncations(name, data))
        if name in ("baseline.jpg", "progressive.jpg", "rgb.png", "rgb.tif", "rgb.bmp", "cmyk.jpg"):
            corpus.update(_bit_flips(name, data))
    corpus.update({f"odd/{name}": value for name, value in _odd_modes().items()})
    corpus.update(_jpeg_lies(bases["baseline.jpg"]))
    corpus.update(_png_lies())
    return corpus
