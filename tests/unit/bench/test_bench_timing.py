"""Clock discipline of the benchmark and the pipeline's stage timer: the device is synchronised around every
timed region, threads report into one timer, and GPU timing without a way to synchronise is refused rather
than silently timed asynchronously."""

from __future__ import annotations

import threading
import time

import pytest

from allbatch.bench.timing import device_synchronizer, no_sync
from allbatch.core.errors import BackendUnavailableError
from allbatch.core.stage_timer import STAGES, StageTimer, timed


def test_stage_timer_syncs_before_and_after_and_accumulates() -> None:
    calls: list[str] = []
    timer = StageTimer(lambda: calls.append("sync"))
    for _ in range(2):
        with timer.time("prepare", 4):
            calls.append("work")
            time.sleep(0.01)
    assert calls == ["sync", "work", "sync"] * 2
    assert timer.seconds["prepare"] >= 0.02  # sleep guarantees a lower bound only
    assert timer.to_dict()["prepare"]["images"] == 8
    assert list(timer.to_dict()) == list(STAGES) and timer.to_dict()["infer"] == {"seconds": 0.0, "images": 0}


def test_stage_timer_collects_from_several_threads() -> None:
    timer = StageTimer()

    def work() -> None:
        for _ in range(200):
            with timed(timer, "read", 1):
                pass

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert timer.images["read"] == 800


def test_timing_off_is_a_shared_no_op() -> None:
    assert timed(None, "infer", 8) is timed(None, "write", 1)


def test_host_only_timing_needs_no_sync() -> None:
    assert device_synchronizer(False) is no_sync


def test_gpu_timing_without_cuda_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the synchroniser exists")
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)  # as if CuPy were not installed
    with pytest.raises(BackendUnavailableError, match="synchronise"):
        device_synchronizer(True)
