"""decode_rgb() and read_encoded(): every odd and bad input gets RGB pixels or a typed failure."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from image_factory import encode, png_header_only, smear_like, write_bad_files
from PIL import Image

from allbatch.core.status import ImageStatus
from allbatch.input.decode import DecodeFailure, decode_rgb, decode_rgb_simple_upsampling
from allbatch.input.discover import discover
from allbatch.input.read import read_encoded


def test_lossless_formats_roundtrip_exactly() -> None:
    rgb = smear_like(3)
    for fmt in ("PNG", "BMP", "TIFF"):
        assert np.array_equal(decode_rgb(encode(rgb, fmt)), rgb), fmt


def test_grey_16bit_keeps_the_high_byte() -> None:
    ramp = np.array([[0, 255, 256, 65535]], dtype=np.uint16)
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    out = decode_rgb(buf.getvalue())
    assert out.shape == (1, 4, 3)
    assert out[0, :, 0].tolist() == [0, 0, 1, 255]  # Pillow's own convert would clip 256 and 65535 to 255


def test_grey_rgba_palette_cmyk_become_rgb() -> None:
    rgb = smear_like(4)
    grey = decode_rgb(encode(rgb[..., 1], "PNG"))
    assert np.array_equal(grey, np.repeat(rgb[..., 1:2], 3, axis=2))
    rgba = decode_rgb(encode(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]), "PNG"))
    assert np.array_equal(rgba, rgb)
    palette = Image.fromarray(rgb).convert("P")
    buf = io.BytesIO()
    palette.save(buf, format="PNG")
    assert np.array_equal(decode_rgb(buf.getvalue()), np.asarray(palette.convert("RGB")))
    cmyk = io.BytesIO()
    Image.fromarray(rgb).convert("CMYK").save(cmyk, format="JPEG", quality=95)
    assert np.abs(decode_rgb(cmyk.getvalue()).astype(int) - rgb).mean() < 6


def test_exif_orientation_is_applied() -> None:
    rgb = smear_like(5, (40, 60))
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    image.save(buf, format="PNG", exif=exif)
    assert decode_rgb(buf.getvalue()).shape == (60, 40, 3)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"not an image at all", ImageStatus.DECODE_ERROR),
        (encode(smear_like(1), "JPEG")[:300], ImageStatus.DECODE_ERROR),
        (png_header_only(50000, 50000), ImageStatus.TOO_LARGE),
    ],
)
def test_failures_are_typed(data: bytes, status: ImageStatus) -> None:
    with pytest.raises(DecodeFailure) as info:
        decode_rgb(data)
    assert info.value.status == status
    assert str(info.value)


def test_float_images_are_refused_as_unsupported() -> None:
    buf = io.BytesIO()
    Image.fromarray(np.ones((4, 4), dtype=np.float32)).save(buf, format="TIFF")
    with pytest.raises(DecodeFailure) as info:
        decode_rgb(buf.getvalue())
    assert info.value.status == ImageStatus.UNSUPPORTED


def test_read_stage_statuses(tmp_path: Path) -> None:
    expected = write_bad_files(tmp_path)
    for index, item in enumerate(discover(tmp_path)):
        image = read_encoded(index, item)
        if expected[item.relpath] == "empty":
            assert image.status == ImageStatus.EMPTY and image.data is None
        elif expected[item.relpath] == "unreadable":
            assert image.status == ImageStatus.UNREADABLE and image.sha256 == ""
        else:
            assert image.status == ImageStatus.OK and len(image.sha256) == 64


def test_bottom_band_blanking_is_part_of_preprocessing() -> None:
    from allbatch.prepare.preprocessing import Preprocessing, blank_bottom_band

    rgb = smear_like(12)
    assert blank_bottom_band(rgb, Preprocessing()) is rgb  # default: nothing blanked
    prep = Preprocessing(blank_bottom_fraction=48 / 224)
    out = blank_bottom_band(rgb, prep)
    assert (out[-48:] == 0).all() and np.array_equal(out[:-48], rgb[:-48])
    assert prep.blank_rows(1536) == 329 and prep.blank_rows(1) == 0


def _jpeg(rgb: np.ndarray, subsampling: int, orientation: int = 1) -> bytes:
    image = Image.fromarray(rgb)
    exif = image.getexif()
    if orientation != 1:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=92, subsampling=subsampling, exif=exif)
    return buf.getvalue()


def test_simple_upsampling_differs_from_the_fancy_one_only_in_subsampled_chroma() -> None:
    rgb = smear_like(7, (96, 128))
    # 4:4:4: nothing to upsample, so both decoders give the same pixels
    full = _jpeg(rgb, subsampling=0)
    assert np.array_equal(decode_rgb_simple_upsampling(full), decode_rgb(full))
    # 4:2:0 (what cameras and the development images use): a level or two apart, at colour edges
    half = _jpeg(rgb, subsampling=2)
    difference = np.abs(decode_rgb_simple_upsampling(half).astype(int) - decode_rgb(half))
    assert difference.max() > 0 and difference.mean() < 2.0
    # lossless formats decode as decode_rgb does
    png = encode(rgb, "PNG")
    assert np.array_equal(decode_rgb_simple_upsampling(png), decode_rgb(png))


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_simple_upsampling_applies_the_exif_orientation(orientation: int) -> None:
    data = _jpeg(smear_like(8, (40, 64)), subsampling=0, orientation=orientation)
    assert np.array_equal(decode_rgb_simple_upsampling(data), decode_rgb(data))
