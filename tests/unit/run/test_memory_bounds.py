"""Memory is bounded by the batch, not by headers: pixel budgets, and MemoryError as a per-file status."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from dali_support import HAS_DALI
from image_factory import encode, smear_like
from paths import REPO

import allbatch.prepare.recipe as prepare_module
from allbatch.core.status import ImageStatus
from allbatch.input.read import encoded_from_bytes
from allbatch.prepare.cpu import PillowPreparer, PixelBudget
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import SegmentationParams

ROOT = REPO


def test_memory_error_while_segmenting_is_that_images_status(monkeypatch: pytest.MonkeyPatch) -> None:
    real_segment = prepare_module.segment

    def segment_or_fail(rgb: np.ndarray, params: SegmentationParams) -> tuple[np.ndarray, np.ndarray]:
        if rgb.shape[0] == 100:
            raise MemoryError
        return real_segment(rgb, params)

    monkeypatch.setattr(prepare_module, "segment", segment_or_fail)  # the one recipe segments
    datas = [encode(smear_like(1, (64, 64)), "PNG"), encode(smear_like(2, (100, 80)), "PNG"), encode(smear_like(3), "JPEG")]
    preparer = PillowPreparer(Preprocessing(), SegmentationParams())
    batch = preparer.prepare([encoded_from_bytes(i, f"img{i}.png", d) for i, d in enumerate(datas)])
    preparer.close()
    assert [image.status for image in batch.images] == [ImageStatus.OK, ImageStatus.TOO_LARGE, ImageStatus.OK]
    assert batch.images[1].error == "not enough memory to prepare 8000 pixels"
    assert batch.inputs.shape[0] == 2 and np.isnan(batch.mask_fraction[1])


def test_a_real_memory_limit_gives_a_status_not_a_crash(tmp_path: Path) -> None:
    """Under RLIMIT_AS a 24-megapixel JPEG cannot be prepared: the batch goes on with it marked too_large."""
    big = tmp_path / "big.jpg"
    big.write_bytes(encode(np.tile(smear_like(5, (500, 500)), (8, 12, 1)), "JPEG", quality=80))
    script = textwrap.dedent(
        f"""
        import resource, sys
        sys.path.insert(0, {str(ROOT)!r})
        from allbatch.prepare.cpu import PillowPreparer
        from allbatch.prepare.preprocessing import Preprocessing
        from allbatch.input.read import encoded_from_bytes
        from allbatch.prepare.segment import SegmentationParams
        from allbatch.core.status import ImageStatus
        data = open({str(big)!r}, "rb").read()
        preparer = PillowPreparer(Preprocessing(), SegmentationParams(), threads=1)
        preparer.prepare([encoded_from_bytes(0, "warm.jpg", {encode(smear_like(6), "JPEG")!r})])
        vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm + 150 * 2**20, resource.RLIM_INFINITY))
        small = encoded_from_bytes(1, "small.jpg", {encode(smear_like(7), "JPEG")!r})
        batch = preparer.prepare([encoded_from_bytes(0, "big.jpg", data), small])
        print(ImageStatus(batch.images[0].status).name, ImageStatus(batch.images[1].status).name, batch.images[0].error)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[:2] == ["TOO_LARGE", "OK"], result.stdout


def test_pixel_budget_makes_a_second_large_image_wait() -> None:
    budget = PixelBudget(100)
    entered = threading.Event()
    release = threading.Event()

    def second() -> None:
        with budget.hold(80):
            entered.set()

    with budget.hold(80):
        thread = threading.Thread(target=second)
        thread.start()
        assert not entered.wait(0.3)  # cannot fit while 80 of 100 are held
        release.set()
    thread.join(5)
    assert entered.is_set()
    with budget.hold(1000):  # larger than the budget: runs alone, never deadlocks
        pass


@pytest.mark.dali
@pytest.mark.skipif(not HAS_DALI, reason="nvidia-dali is not installed")
def test_dali_host_memory_errors_are_bisected_down_to_the_image(monkeypatch: pytest.MonkeyPatch) -> None:
    """A run that fails with std::bad_alloc is split; the image that fails alone becomes too_large."""
    from allbatch.prepare.dali.preparer import DaliPreparer

    datas = [encode(smear_like(k, (40 + k, 50)), "PNG") for k in range(5)]
    preparer = DaliPreparer(Preprocessing(), SegmentationParams(), device="cpu", max_batch=8)
    real_submit, real_result = preparer.runner.submit, preparer.runner.result
    fed: dict[int, list[bytes]] = {}

    def submit(encoded: list[bytes], heights: list[int] | None = None) -> int:
        ticket = real_submit(encoded, heights)
        fed[ticket] = list(encoded)
        return ticket

    def result_or_fail(ticket: int) -> object:
        outputs = real_result(ticket)
        if datas[3] in fed[ticket]:  # what DALI raises when a run does not fit in host memory
            raise RuntimeError("std::bad_alloc")
        return outputs

    monkeypatch.setattr(preparer.runner, "submit", submit)
    monkeypatch.setattr(preparer.runner, "result", result_or_fail)
    batch = preparer.prepare([encoded_from_bytes(i, f"img{i}.png", d) for i, d in enumerate(datas)])
    preparer.close()
    assert [image.status for image in batch.images] == [ImageStatus.OK] * 3 + [ImageStatus.TOO_LARGE, ImageStatus.OK]
    assert batch.images[3].error == f"not enough memory to prepare {43 * 50} pixels"
    assert batch.inputs.shape[0] == 4
