"""The shared acceptance rule (``allbatch.input.image_check``): formats, header lies, strict JPEG data."""

from __future__ import annotations

import io
import resource
import struct
from pathlib import Path

import pytest
from bad_bytes import corrupt_png, random_bytes, truncated_jpeg
from image_factory import encode, png_header_only, smear_like
from PIL import Image

from allbatch.core.status import ImageStatus
from allbatch.input.decode import decode_rgb
from allbatch.input.discover import DiscoveredFile
from allbatch.input.image_check import DecodeFailure, check_image, sniff_format
from allbatch.input.read import read_encoded


@pytest.mark.parametrize(("fmt", "name"), [("JPEG", "jpeg"), ("PNG", "png"), ("TIFF", "tiff"), ("BMP", "bmp")])
def test_supported_formats_are_sniffed_and_sized(fmt: str, name: str) -> None:
    data = encode(smear_like(0, (30, 50)), fmt)
    assert sniff_format(data) == name
    header = check_image(data)
    assert (header.format, header.height, header.width) == (name, 30, 50)


@pytest.mark.parametrize(("fmt", "name"), [("WEBP", "webp"), ("PPM", "pnm"), ("JPEG2000", "jpeg2000"), ("GIF", "gif")])
def test_other_formats_are_unsupported_whatever_the_decoder_could_do(fmt: str, name: str) -> None:
    data = encode(smear_like(0, (30, 50)), fmt)
    assert sniff_format(data) == name
    for check in (check_image, decode_rgb):
        with pytest.raises(DecodeFailure, match=f"{name.upper()} content is not supported") as info:
            check(data)
        assert info.value.status == ImageStatus.UNSUPPORTED


def test_eps_named_jpg_never_reaches_ghostscript(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import EpsImagePlugin

    def no_ghostscript(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ghostscript was called")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", no_ghostscript)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nnewpath 0 0 moveto 64 64 lineto stroke\nshowpage\n"
    with pytest.raises(DecodeFailure, match="EPS content is not supported") as info:
        decode_rgb(eps)
    assert info.value.status == ImageStatus.UNSUPPORTED


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = bytearray(encode(smear_like(3, (64, 64)), "JPEG", quality=90))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_a_small_jpeg_claiming_10000x10000_is_refused_without_decoding_its_pixels() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DecodeFailure, match="premature end of data segment") as info:
        decode_rgb(_jpeg_claiming(10000, 10000))
    assert info.value.status == ImageStatus.DECODE_ERROR
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 200  # the full decode alone would take 300 MiB, segmentation GBs more


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", ImageStatus.EMPTY, "empty"),
        (random_bytes(), ImageStatus.DECODE_ERROR, "not a recognised image format"),
        (b"this is not an image\n" * 20, ImageStatus.DECODE_ERROR, "not a recognised image format"),
        (truncated_jpeg(), ImageStatus.DECODE_ERROR, "truncated JPEG"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 64 + b"\xff\xda" + b"\x00" * 64 + b"\xff\xd9", ImageStatus.DECODE_ERROR, "unreadable jpeg header"),
        (png_header_only(60000, 60000), ImageStatus.TOO_LARGE, "exceeds"),
        (png_header_only(12000, 10000), ImageStatus.TOO_LARGE, "exceeds the limit"),
        (encode(smear_like(4), "PNG")[:-12], ImageStatus.DECODE_ERROR, "truncated PNG"),
        (encode(smear_like(5), "JPEG")[:-600] + b"\x00" * 100_000, ImageStatus.DECODE_ERROR, "truncated JPEG"),
    ],
)
def test_failures_are_refused_before_decoding(data: bytes, status: ImageStatus, message: str) -> None:
    with pytest.raises(DecodeFailure, match=message) as info:
        check_image(data)
    assert info.value.status == status


def test_a_jpeg_without_scan_data_is_a_decode_error() -> None:
    data = encode(smear_like(6), "JPEG")
    sos = data.index(b"\xff\xda")
    with pytest.raises(DecodeFailure) as info:
        check_image(data[: sos + 30] + b"\xff\xd9")
    assert info.value.status == ImageStatus.DECODE_ERROR


def test_corrupt_jpeg_data_is_an_error_not_a_grey_image() -> None:
    data = bytearray(encode(smear_like(7), "JPEG", quality=90))
    sos = data.index(b"\xff\xda")
    middle = (sos + len(data)) // 2
    data[middle : middle + 40] = b"\xff\xd0" * 20  # restart markers where none belong: libjpeg warns and fills grey
    with pytest.raises(DecodeFailure, match="JPEG decoder") as info:
        decode_rgb(bytes(data))
    assert info.value.status == ImageStatus.DECODE_ERROR


def test_float_images_are_unsupported_by_the_rule() -> None:
    buf = io.BytesIO()
    Image.fromarray(smear_like(0)[..., 0].astype("float32")).save(buf, format="TIFF")
    with pytest.raises(DecodeFailure, match="pixel mode F") as info:
        check_image(buf.getvalue())
    assert info.value.status == ImageStatus.UNSUPPORTED


def test_pixel_limit_is_configurable() -> None:
    data = encode(smear_like(0, (40, 50)), "PNG")
    assert check_image(data, max_pixels=2000).width == 50
    with pytest.raises(DecodeFailure, match="50x40 pixels exceeds the limit of 1999"):
        check_image(data, max_pixels=1999)


def test_exif_rotation_swaps_the_header_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees: a 40 x 70 (H x W) file is shown 70 x 40
    buf = io.BytesIO()
    Image.fromarray(smear_like(0, (40, 70))).save(buf, format="JPEG", exif=exif.tobytes())
    header = check_image(buf.getvalue())
    assert (header.height, header.width) == (70, 40)


def test_png_header_check_does_not_decode_the_pixels() -> None:
    header = check_image(corrupt_png())  # the pixel data is garbage; the header is fine
    assert (header.format, header.height, header.width) == ("png", 224, 224)


def test_a_short_jpeg_padded_with_400_mb_of_zeros_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "padded.jpg"
    with path.open("wb") as handle:
        handle.write(encode(smear_like(8), "JPEG")[:2048])
        handle.truncate(400 * 1024 * 1024)  # sparse: costs no disk
    image = read_encoded(0, DiscoveredFile(path, "padded.jpg"))
    assert image.status == ImageStatus.DECODE_ERROR and "not read" in image.error
    assert image.data is None and image.sha256 == ""  # never loaded, never hashed
    assert image.stat is not None and image.stat.size == 400 * 1024 * 1024


def test_a_large_plausible_file_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "big.bmp"
    path.write_bytes(encode(smear_like(9, (2400, 2600)), "BMP"))  # 18.7 MB, above the head-first size
    image = read_encoded(0, DiscoveredFile(path, "big.bmp"))
    assert image.status == ImageStatus.OK and image.data == path.read_bytes()
