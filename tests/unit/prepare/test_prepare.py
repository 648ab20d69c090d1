"""The one preparation recipe (allbatch.prepare.recipe): its order of steps, and that training decodes as inference."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from paths import REPO
from PIL import Image

from allbatch.input.decode import decode_rgb
from allbatch.prepare.assemble import normalise_pair
from allbatch.prepare.cpu import prepare_one
from allbatch.prepare.preprocessing import Preprocessing, resize_rgb
from allbatch.prepare.recipe import prepare_bytes, prepare_files, prepare_rgb, read_rgb
from allbatch.prepare.segment import SegmentationParams, segment

DEMO = REPO / "allbatch" / "demo"
PREP = Preprocessing(blank_bottom_fraction=48 / 224)
SEG = SegmentationParams()


def test_recipe_is_decode_blank_segment_resize_normalise() -> None:
    data = (DEMO / "Early" / "WBC-Malignant-Early-076.jpg").read_bytes()
    rgb = decode_rgb(data)
    blanked = rgb.copy()
    blanked[-48:] = 0
    segmented, mask = segment(blanked, SEG)
    expected = normalise_pair(resize_rgb(blanked, 224), resize_rgb(segmented, 224), PREP)
    prepared = prepare_bytes(data, PREP, SEG)
    assert prepared.inputs.shape == (2, 3, 224, 224) and prepared.inputs.dtype == np.float32
    assert np.array_equal(prepared.inputs, expected)
    assert prepared.mask_fraction == pytest.approx(float(mask.mean()))
    pair, fraction = prepare_one(data, PREP, SEG)  # the inference preparer is the same recipe
    assert np.array_equal(pair, expected) and fraction == prepared.mask_fraction


def test_change_sees_the_blanked_original_and_the_mask_follows_it() -> None:
    rgb = read_rgb(DEMO / "Pre" / "WBC-Malignant-Pre-376.jpg")
    seen: list[np.ndarray] = []

    def flip(image: np.ndarray) -> np.ndarray:
        seen.append(image)
        return image[::-1]

    flipped = prepare_rgb(rgb, PREP, SEG, flip)
    assert np.all(seen[0][-48:] == 0)  # the label band is blanked before any change
    reference = prepare_rgb(rgb, PREP, SEG)
    assert np.array_equal(flipped.inputs, reference.inputs[:, :, ::-1])  # both channels from the changed pixels
    assert flipped.mask_fraction == pytest.approx(reference.mask_fraction)


def test_training_decodes_as_inference_exif_orientation(tmp_path: Path) -> None:
    """A JPEG with EXIF orientation 6 (rotate 90 degrees clockwise): training and inference see the same pixels."""
    torch = pytest.importorskip("torch", reason="the training dataset needs torch")
    from factory.training.data import PairDataset, list_development_images

    rgb = read_rgb(DEMO / "Benign" / "WBC-Benign-001.jpg")[:, :200]  # not square, so a rotation changes the shape
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=95, exif=exif.tobytes())
    (tmp_path / "Benign").mkdir()
    (tmp_path / "Benign" / "WBC-Benign-001.jpg").write_bytes(buffer.getvalue())
    images = list_development_images(tmp_path)
    dataset = PairDataset(images, PREP, SEG, None, seed=0)
    assert dataset.pixels[0].shape == (200, 224, 3)  # transposed by the EXIF orientation
    inputs, label = dataset[0]
    assert label == 0
    assert torch.equal(inputs, torch.from_numpy(prepare_bytes(buffer.getvalue(), PREP, SEG).inputs))
    assert np.array_equal(prepare_files([images[0].path], PREP, SEG)[0], inputs.numpy())


def test_batch_preparer_writes_each_image_into_its_row_and_drops_failed_rows() -> None:
    """PillowPreparer prepares each image into its row of the batch (no stacking copy); the inputs hold the
    decoded images in order, each bit-identical to the recipe on its own, whatever failed between them."""
    from allbatch.core.records import EncodedImage
    from allbatch.core.status import ImageStatus
    from allbatch.prepare.cpu import PillowPreparer

    files = sorted(DEMO.glob("*/*.jpg"))[:3]
    datas = [files[0].read_bytes(), b"no image", files[1].read_bytes(), files[2].read_bytes()[:200]]
    images = [EncodedImage(i, f"{i}.jpg", data, "") for i, data in enumerate(datas)]
    preparer = PillowPreparer(PREP, SEG, threads=2)
    try:
        batch = preparer.prepare(images)
        whole = preparer.prepare([EncodedImage(0, "a.jpg", datas[0], ""), EncodedImage(1, "b.jpg", datas[2], "")])
    finally:
        preparer.close()
    assert batch.ok_positions == [0, 2] and images[1].status != ImageStatus.OK and images[3].status != ImageStatus.OK
    assert batch.inputs.shape == (2, 2, 3, 224, 224) and batch.inputs.flags.c_contiguous
    for row, data in zip(batch.inputs, (datas[0], datas[2]), strict=True):
        assert np.array_equal(row, prepare_bytes(data, PREP, SEG).inputs)
    assert np.array_equal(whole.inputs, batch.inputs)
    assert np.isnan(batch.mask_fraction[[1, 3]]).all() and batch.sizes is not None and batch.sizes[1].tolist() == [0, 0]


def test_training_starts_from_the_nvjpeg_like_decode_when_drawn(tmp_path: Path) -> None:
    """With simple_upsampling_p = 1 every training item starts from the file decoded as the GPU path decodes it."""
    torch = pytest.importorskip("torch", reason="the training dataset needs torch")
    pytest.importorskip("cv2", reason="training augmentation needs OpenCV")
    from functools import partial

    from allbatch.input.decode import decode_rgb_simple_upsampling
    from factory.training.augment import AugmentConfig, augment
    from factory.training.data import PairDataset, list_development_images

    (tmp_path / "Benign").mkdir()
    shutil.copy(DEMO / "Benign" / "WBC-Benign-001.jpg", tmp_path / "Benign")
    images = list_development_images(tmp_path)
    config = AugmentConfig(simple_upsampling_p=1.0)
    dataset = PairDataset(images, PREP, SEG, config, seed=3)
    data = images[0].path.read_bytes()
    assert np.array_equal(dataset.simple_pixels[0], decode_rgb_simple_upsampling(data))
    assert not np.array_equal(dataset.simple_pixels[0], dataset.pixels[0])  # a 4:2:0 JPEG: the decoders differ
    rng = np.random.default_rng((3, 0, 0))
    rng.random()  # the draw that chose the decode
    expected = prepare_rgb(decode_rgb_simple_upsampling(data), PREP, SEG, partial(augment, rng=rng, config=config)).inputs
    assert torch.equal(dataset[0][0], torch.from_numpy(expected))
    assert PairDataset(images, PREP, SEG, AugmentConfig(simple_upsampling_p=0.0), seed=3).simple_pixels == []
