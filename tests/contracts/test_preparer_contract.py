"""The preparer contract: every preparer, created as a run creates it, against the one CPU recipe.

The reference is ``allbatch.prepare.recipe`` (decode, blank the band, segment, resize, normalise) applied to each
file on its own, with the read stage's outcome (``allbatch.input.read.read_encoded``) where a file cannot be read.
Each preparer (``allbatch.run.plan.make_preparer`` for the decoder names "cpu", "dali-cpu" and "dali", with the
shipped model's preprocessing and segmentation) gets the same files in the run's batches, good and bad:

- the eight demo smears (real camera images), a few synthetic smears, every kind of troublesome file the tests
  know (``image_factory.write_bad_files``: empty, truncated, random bytes, text, a header claiming 3.6 gigapixels,
  a dangling link, and odd but valid PNG-as-JPEG, grey, CMYK, 16-bit, RGBA, one-pixel, 3-MP, TIFF and BMP files),
  and a JPEG with an EXIF rotation;
- the same images in the same order, the same status for each, a one-line reason for each failure;
- ``inputs`` (n_ok, 2, 3, S, S) float32 (NumPy on the host, CuPy for "dali"), rows in order, within the stated
  tolerance of the recipe's; ``mask_fraction`` (n,) float32, NaN exactly for the failed images, within the
  stated tolerance; ``sizes`` the decoded (height, width).

"dali" (DALI's mixed decoder and CuPy on a GPU) is marked gpu and skipped with the run's own reason where it
cannot run (``backends.select.decoder_availability``).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from image_factory import exif_rotated_jpeg, write_bad_files, write_good_images
from paths import DEMO

from allbatch.backends.select import decoder_availability
from allbatch.core.records import EncodedImage, PreparedBatch
from allbatch.core.status import ImageStatus
from allbatch.input.decode import DecodeFailure
from allbatch.input.discover import discover
from allbatch.input.read import read_encoded
from allbatch.model.manifest import DEFAULT_MODEL, ModelArtifact, load_model_artifact
from allbatch.prepare.recipe import PreparedImage, prepare_bytes
from allbatch.run.config import RunConfig
from allbatch.run.plan import make_preparer

BATCH_SIZE = 8
"""The run's ``--batch-size``: the 27 files arrive in four batches, good and bad mixed."""


@dataclass(frozen=True)
class PreparerCase:
    """One preparer (a decoder name of ``make_preparer``) and how close it must come to the recipe.

    Input differences are in 8-bit levels (|d input| x 255 x std); ``None`` leaves the largest one unbounded."""

    decoder: str
    max_levels_demo: float | None
    """Largest difference on the demo smears (224 x 224 8-bit JPEGs: what the development data looks like)."""
    max_levels_other: float | None
    """Largest difference on the other files (resized, 16-bit, rotated)."""
    mean_levels: float
    """Mean difference per image, every file."""
    mask_atol: float
    """Largest |mask fraction - the recipe's|."""
    why: str


CASES = [
    pytest.param(PreparerCase("cpu", 0.0, 0.0, 0.0, 0.0, "the recipe itself, on the run's thread pool"), id="cpu"),
    pytest.param(
        PreparerCase(
            "dali-cpu",
            0.0,
            4.0,
            0.5,
            0.0,
            "DALI's CPU operators: exact where nothing is resized or rescaled; DALI's resize and 16-bit scaling round "
            "differently (measured at most 1 level on the 3-MP, 16-bit and rotated files); segmentation at native "
            "resolution is the same arithmetic",
        ),
        id="dali-cpu",
        marks=pytest.mark.dali,
    ),
    pytest.param(
        PreparerCase(
            "dali",
            None,
            None,
            4.0,
            0.02,
            "nvJPEG upsamples chroma more simply than libjpeg-turbo: a level or two at colour edges, which can flip "
            "a segmented pixel (DALI's decoder-consistency bound is a mean of 4 levels; mask fractions measured "
            "within 0.0116 on 768 development images on an H200)",
        ),
        id="dali",
        marks=[pytest.mark.gpu, pytest.mark.dali],
    ),
]


@dataclass(frozen=True)
class Expected:
    """The recipe's answer for one file: status, and for a good file its prepared image."""

    relpath: str
    status: ImageStatus
    prepared: PreparedImage | None


def read_all(root: Path) -> list[EncodedImage]:
    """Every file under ``root`` through the read stage, in discovery order (what a run hands the preparer)."""
    return [read_encoded(index, item) for index, item in enumerate(discover(root))]


@dataclass(frozen=True)
class Corpus:
    """The files (under ``root``), the model whose preprocessing applies, and the recipe's answer for each file."""

    root: Path
    artifact: ModelArtifact
    expected: list[Expected]


@dataclass(frozen=True)
class Prepared:
    """One preparer's batches over the whole corpus, joined."""

    case: PreparerCase
    name: str
    batches: list[PreparedBatch]
    images: list[EncodedImage]
    inputs: np.ndarray
    """(n_ok, 2, 3, S, S) float32 on the host (copied from the GPU for "dali")."""
    mask_fraction: np.ndarray
    sizes: np.ndarray


def _recipe(image: EncodedImage, artifact: ModelArtifact) -> Expected:
    if image.status != ImageStatus.OK or image.data is None:
        return Expected(image.relpath, image.status, None)
    try:
        return Expected(image.relpath, ImageStatus.OK, prepare_bytes(image.data, artifact.manifest.prep, artifact.manifest.seg))
    except DecodeFailure as failure:
        return Expected(image.relpath, failure.status, None)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Corpus:
    root = tmp_path_factory.mktemp("preparer-contract")
    shutil.copytree(DEMO, root / "demo", ignore=shutil.ignore_patterns("*.md"))
    write_bad_files(root / "files")
    write_good_images(root / "synthetic", 3)
    (root / "files" / "odd" / "exif_rotated.jpg").write_bytes(exif_rotated_jpeg(3))
    # The shipped model's manifest is what users run (it blanks the bottom band); the tiny model where it is absent.
    artifact = load_model_artifact() if DEFAULT_MODEL.is_file() else load_model_artifact(request.getfixturevalue("tiny_model"))
    return Corpus(root, artifact, [_recipe(image, artifact) for image in read_all(root)])


def _host(array: Any) -> np.ndarray:
    return np.asarray(array.get() if hasattr(array, "get") else array)


@pytest.fixture(scope="module", params=CASES)
def prepared(request: pytest.FixtureRequest, corpus: Corpus) -> Iterator[Prepared]:
    case: PreparerCase = request.param
    if case.decoder != "cpu":
        usable, reason = decoder_availability()[case.decoder]
        if not usable:
            pytest.skip(f"decoder {case.decoder} cannot run here: {reason}")
    config = RunConfig(corpus.root, corpus.root / "unused.h5", decoder=case.decoder, batch_size=BATCH_SIZE, decode_threads=2)
    preparer = make_preparer(case.decoder, corpus.artifact, config)
    images = read_all(corpus.root)
    try:
        batches = [preparer.prepare(images[start : start + BATCH_SIZE]) for start in range(0, len(images), BATCH_SIZE)]
    finally:
        preparer.close()
    yield Prepared(
        case,
        preparer.name,
        batches,
        [image for batch in batches for image in batch.images],
        np.concatenate([_host(batch.inputs) for batch in batches]),
        np.concatenate([batch.mask_fraction for batch in batches]),
        np.concatenate([batch.sizes if batch.sizes is not None else np.full((len(batch.images), 2), -1, np.int32) for batch in batches]),
    )


def test_the_corpus_has_good_and_bad_files_of_every_kind(corpus: Corpus) -> None:
    statuses = {entry.status for entry in corpus.expected}
    assert statuses == {ImageStatus.OK, ImageStatus.EMPTY, ImageStatus.DECODE_ERROR, ImageStatus.TOO_LARGE, ImageStatus.UNREADABLE}
    assert sum(entry.relpath.startswith("demo/") and entry.status == ImageStatus.OK for entry in corpus.expected) == 8
    assert len(corpus.expected) == 27


def test_same_images_in_the_same_order_with_the_same_statuses(prepared: Prepared, corpus: Corpus) -> None:
    assert prepared.name == prepared.case.decoder
    assert [image.relpath for image in prepared.images] == [entry.relpath for entry in corpus.expected]
    assert [image.index for image in prepared.images] == list(range(len(corpus.expected)))
    got = {image.relpath: image.status for image in prepared.images}
    assert got == {entry.relpath: entry.status for entry in corpus.expected}
    for image in prepared.images:
        if image.status != ImageStatus.OK:
            assert image.error and "\n" not in image.error, (image.relpath, image.error)


def test_batches_have_the_documented_shapes_and_types(prepared: Prepared, corpus: Corpus) -> None:
    size = corpus.artifact.manifest.prep.size
    for batch in prepared.batches:
        n, n_ok = len(batch.images), len(batch.ok_positions)
        if prepared.case.decoder == "dali":
            assert hasattr(batch.inputs, "__cuda_array_interface__"), type(batch.inputs)  # stays on the GPU
        else:
            assert isinstance(batch.inputs, np.ndarray), type(batch.inputs)
        assert tuple(batch.inputs.shape) == (n_ok, 2, 3, size, size) and batch.inputs.dtype == np.float32
        assert batch.mask_fraction.shape == (n,) and batch.mask_fraction.dtype == np.float32
        assert np.array_equal(np.isnan(batch.mask_fraction), [image.status != ImageStatus.OK for image in batch.images])
        assert batch.sizes is not None and batch.sizes.shape == (n, 2) and batch.sizes.dtype == np.int32


def test_inputs_masks_and_sizes_match_the_recipe(prepared: Prepared, corpus: Corpus) -> None:
    case, std = prepared.case, corpus.artifact.manifest.prep.std
    good = [(position, entry) for position, entry in enumerate(corpus.expected) if entry.prepared is not None]
    assert len(prepared.inputs) == len(good)
    for row, (position, entry) in enumerate(good):
        assert entry.prepared is not None
        levels = np.abs(prepared.inputs[row] - entry.prepared.inputs) * 255 * std
        bound = case.max_levels_demo if entry.relpath.startswith("demo/") else case.max_levels_other
        if bound is not None:
            assert levels.max() <= bound + 1e-3, f"{case.decoder}, {entry.relpath}: {levels.max():.2f} levels > {bound} ({case.why})"
        assert levels.mean() <= case.mean_levels + 1e-6, f"{case.decoder}, {entry.relpath}: mean {levels.mean():.3f} levels"
        fraction, reference = float(prepared.mask_fraction[position]), float(np.float32(entry.prepared.mask_fraction))  # stored as float32
        assert abs(fraction - reference) <= case.mask_atol, (entry.relpath, fraction, reference)
        assert tuple(prepared.sizes[position]) == entry.prepared.size, entry.relpath
