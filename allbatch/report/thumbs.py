"""Thumbnails for the report: the image and its segmentation mask, as base64 JPEG/PNG data URIs.

Read from the images at report time (results.h5 holds no pixels). A missing or unreadable image gives
None and the page says "missing", never a failed report.
"""

from __future__ import annotations

import base64
import io
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from allbatch.input.decode import DecodeFailure, decode_rgb
from allbatch.prepare.preprocessing import Preprocessing, blank_bottom_band
from allbatch.prepare.segment import SegmentationParams, segment

log = logging.getLogger("allbatch.report")

THUMB_SIDE = 112
"""Longest side of a thumbnail in pixels: 2 x 112 px per image keeps 100 thumbnails near 0.5 MB."""
MAX_READ_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Thumbnail:
    """Data URIs of one image (JPEG) and of its segmentation mask (PNG, foreground white)."""

    image: str
    mask: str


def _data_uri(image: Image.Image, fmt: str) -> str:
    buffer = io.BytesIO()
    if fmt == "JPEG":
        image.save(buffer, format="JPEG", quality=80, optimize=True)
    else:
        image.save(buffer, format="PNG", optimize=True)
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def make_thumbnail(path: Path, prep: Preprocessing, seg: SegmentationParams, side: int = THUMB_SIDE) -> Thumbnail | None:
    """Thumbnail and mask of the image at ``path``, segmented at native resolution as the run did; None
    when the file is missing, too large or does not decode."""
    try:
        if path.stat().st_size > MAX_READ_BYTES:
            return None
        rgb = decode_rgb(path.read_bytes())
    except (OSError, DecodeFailure) as exc:
        log.debug("no thumbnail for %s: %s", path, exc)
        return None
    _, mask = segment(blank_bottom_band(rgb, prep), seg)
    image = Image.fromarray(rgb)
    image.thumbnail((side, side), Image.Resampling.BILINEAR)
    mask_image = Image.fromarray((mask * np.uint8(255)).astype(np.uint8), mode="L").resize(image.size, Image.Resampling.BOX)
    return Thumbnail(_data_uri(image, "JPEG"), _data_uri(mask_image, "PNG"))
