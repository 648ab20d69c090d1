"""Clock discipline of the benchmark: the device is synchronised around every timed region, and GPU
timing without a way to synchronise is refused rather than silently timed asynchronously."""

from __future__ import annotations

import time

import pytest

from allbatch.bench.timing import StageClock, device_synchronizer, no_sync
from allbatch.errors import BackendUnavailableError


def test_stage_clock_syncs_before_and_after_and_accumulates() -> None:
    calls: list[str] = []
    clock = StageClock(lambda: calls.append("sync"))
    for _ in range(2):
        with clock.time("decode"):
            calls.append("work")
            time.sleep(0.01)
    assert calls == ["sync", "work", "sync"] * 2
    assert 0.02 <= clock.seconds["decode"] < 1.0


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
