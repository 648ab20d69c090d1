"""Issue 22 on a CUDA GPU (run on the lent machine): CUDA graphs (on by default) and eager agree, asynchronous
``submit`` returns ``infer``'s outputs, ``torch.compile`` agrees, the mixed decoder's errors name the sample (one
extra run, no rebuild), ``jpeg_fancy_upsampling`` brings nvJPEG to the CPU decode, QC columns travel in one copy,
and one pipeline serves every preparer of a process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dali_support import HAS_DALI, count_fed_batches, cuda_reason, encoded
from image_factory import encode, smear_like
from paths import REPO, development_files, require_dataset

from allbatch.core.status import ImageStatus
from allbatch.model.manifest import ModelArtifact, load_model_artifact
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import SegmentationParams

torch = pytest.importorskip("torch", reason="needs torch")
_NO_CUDA = cuda_reason() if torch.cuda.is_available() else "torch sees no CUDA GPU"
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(_NO_CUDA is not None, reason=f"needs a CUDA GPU with CuPy: {_NO_CUDA}")]
needs_dali = pytest.mark.skipif(not HAS_DALI, reason="nvidia-dali is not installed")

SEG = SegmentationParams()
DEMO = REPO / "allbatch" / "demo"


@pytest.fixture(scope="module")
def artifact(tiny_model: Path) -> ModelArtifact:
    return load_model_artifact(tiny_model)


@pytest.fixture(scope="module")
def demo_batch(artifact: ModelArtifact) -> np.ndarray:
    from allbatch.prepare.cpu import prepare_one

    manifest = artifact.manifest
    return np.stack([prepare_one(path.read_bytes(), manifest.prep, manifest.seg)[0] for path in sorted(DEMO.glob("*/*.jpg"))])


def test_cuda_graphs_are_the_default_and_agree_with_eager_in_fp16(artifact: ModelArtifact, demo_batch: np.ndarray) -> None:
    from allbatch.backends.select import create_backend
    from allbatch.backends.torch_backend import TorchBackend

    with TorchBackend(artifact, max_batch=4, cuda_graphs=False) as eager:
        expected = eager.infer(demo_batch)
    with create_backend("torch", artifact, max_batch=4) as graphed:
        assert isinstance(graphed, TorchBackend) and graphed.cuda_graphs and graphed._graph is not None
        got = graphed.infer(demo_batch)
        partial = graphed.infer(demo_batch[:3])
    # The same kernels replayed: equal up to cuDNN's choice of algorithm between two autotuning runs.
    np.testing.assert_allclose(got.probs, expected.probs, rtol=0, atol=2e-3)
    np.testing.assert_allclose(got.features, expected.features, rtol=1e-2, atol=1e-2)
    np.testing.assert_allclose(partial.probs, got.probs[:3], rtol=0, atol=2e-3)
    assert np.array_equal(got.probs.argmax(1), expected.probs.argmax(1))


def test_submit_is_asynchronous_and_returns_what_infer_returns(artifact: ModelArtifact, demo_batch: np.ndarray) -> None:
    from allbatch.backends.torch_backend import TorchBackend

    with TorchBackend(artifact, max_batch=4) as backend:
        assert backend.submits_async
        expected = backend.infer(demo_batch)
        first, second = backend.submit(demo_batch[:4]), backend.submit(demo_batch[4:])  # two chunks in flight
        later, earlier = second.result(), first.result()
    np.testing.assert_array_equal(np.concatenate([earlier.probs, later.probs]), expected.probs)
    np.testing.assert_array_equal(np.concatenate([earlier.features, later.features]), expected.features)


def test_torch_compile_agrees_with_eager_and_reports_its_compile_time(artifact: ModelArtifact, demo_batch: np.ndarray) -> None:
    from allbatch.backends.torch_backend import TorchBackend

    with TorchBackend(artifact, max_batch=8, cuda_graphs=False) as eager:
        expected = eager.infer(demo_batch).probs
    with TorchBackend(artifact, max_batch=8, torch_compile=True) as compiled:
        got = compiled.infer(demo_batch).probs
        details = compiled.describe()
    assert details["torch_compile"] is True and details["compile_seconds"] > 0
    np.testing.assert_allclose(got, expected, rtol=0, atol=5e-3)


def test_qc_columns_from_the_device_are_exact() -> None:
    import cupy

    from allbatch.qc.stage import to_host_once

    rng = np.random.default_rng(1)
    host = {
        "blur": rng.random(9, dtype=np.float32),
        "flags": rng.integers(0, 2**16, 9, dtype=np.uint16),
        "size": rng.integers(0, 9, (9, 2), dtype=np.int32),
    }
    got = to_host_once({key: cupy.asarray(value) for key, value in host.items()})
    for key, value in host.items():
        assert got[key].dtype == value.dtype
        np.testing.assert_array_equal(got[key], value)


@needs_dali
def test_a_file_nvjpeg_rejects_costs_one_extra_run_and_no_rebuild() -> None:
    from allbatch.prepare.dali import pipeline_cache
    from allbatch.prepare.dali.preparer import DaliPreparer

    datas = [encode(smear_like(seed), "JPEG", quality=90) for seed in range(32)]
    whole = bytearray(datas[20])
    for k in range(len(whole) // 2, len(whole) // 2 + 400):  # entropy data damaged, markers intact
        whole[k] = 0xFF if whole[k] == 0xD9 else (whole[k] ^ 0x3C)
    datas[20] = bytes(whole)
    preparer = DaliPreparer(Preprocessing(), SEG, device="gpu", max_batch=32)
    preparer.ready()
    builds = pipeline_cache.stats().builds
    fed = count_fed_batches(preparer)
    batch = preparer.prepare(encoded(datas))
    preparer.close()
    failed = [i for i, image in enumerate(batch.images) if image.status != ImageStatus.OK]
    if failed:  # nvJPEG refused it (libjpeg-turbo's check may have refused it first: then nothing reaches DALI)
        assert len(fed) <= 2 and preparer.runner.rebuilds == 0 and pipeline_cache.stats().builds == builds, (fed, failed)


@needs_dali
@pytest.mark.realdata
def test_fancy_upsampling_brings_the_mixed_decoder_to_the_cpu_decode() -> None:
    from allbatch.input.decode import decode_rgb
    from allbatch.prepare.dali.pipeline import DaliRunner

    datas = [path.read_bytes() for path in development_files(require_dataset(), count=64)]
    reference = np.stack([decode_rgb(data) for data in datas]).astype(np.int16)
    mean_diff = {}
    for fancy in (False, True):
        runner = DaliRunner(Preprocessing(), SEG, "gpu", max_batch=64, num_threads=4, fancy_upsampling=fancy)
        import cupy

        decoded = cupy.asnumpy(runner.run(datas).original).astype(np.int16)
        runner.close()
        mean_diff[fancy] = float(np.abs(decoded - reference).mean())
    assert mean_diff[True] < mean_diff[False], mean_diff
    assert mean_diff[True] <= 1.0, mean_diff  # nvJPEG's IDCT may still differ by a level here and there


@needs_dali
def test_one_gpu_pipeline_serves_consecutive_preparers() -> None:
    from allbatch.prepare.dali import pipeline_cache
    from allbatch.prepare.dali.preparer import DaliPreparer

    datas = [encode(smear_like(seed), "PNG") for seed in range(8)]
    before = pipeline_cache.stats()
    for _ in range(3):
        preparer = DaliPreparer(Preprocessing(), SEG, device="gpu", max_batch=8)
        preparer.ready()
        assert preparer.prepare(encoded(datas)).inputs.shape[0] == 8
        preparer.close()
    after = pipeline_cache.stats()
    assert after.builds - before.builds <= 1 and (after.builds - before.builds) + (after.reuses - before.reuses) == 3
