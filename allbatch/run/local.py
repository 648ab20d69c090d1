"""Every device of one node: one worker process per GPU (``--gpus``) or per CPU slot (``--workers``).

The parent plans the run (``run.plan``: discovery, the output preflight and its lock, held until the end,
the model fit). Worker i runs the ordinary single-process engine (``allbatch.run.engine.run``) on shard i of N
of the discovered list, into its own part file ``<out>.parts/part-i-of-N.h5``, with
``CUDA_VISIBLE_DEVICES`` set to its GPU (to "" for a CPU worker, which then sees no GPU). The parent only starts the workers,
shows one progress bar for all of them and, when every worker succeeded, merges the parts into
``--out`` (``allbatch.results.merge``) under its lock, writes the folder table and removes the parts. A
worker that dies is reported with its shard; the other workers finish their parts, and the same command
with ``--resume`` redoes only what is missing (each part resumes like a normal run).

The parent holds the output's lock from planning to the end (merge and folder table included), so a second
run on the same output is refused before it touches the parts; a part still locked by a live worker (of a
parent that died) is refused naming that worker. A worker whose parent dies, however it dies, stops after
its chunk in flight and exits (``stop_when_parent_dies``); ``--resume`` then finishes the parts.

Workers are started with the ``spawn`` method: a fresh interpreter, so ``CUDA_VISIBLE_DEVICES`` is set
before any CUDA library is imported, and no CUDA context or thread is inherited from the parent.
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from allbatch.core.errors import AllbatchError, UserInputError
from allbatch.input.shard import Shard
from allbatch.results.lock import held_locks, locked_message
from allbatch.run.config import ProgressCallback, RunConfig, RunProgress
from allbatch.run.engine import run
from allbatch.run.plan import RunPlan, plan_run
from allbatch.run.tally import RunSummary, Tally, add_up

log = logging.getLogger("allbatch.run.local")

POLL_S = 0.2
"""How often the parent looks at its workers while no progress message arrives."""


class WorkerFailedError(AllbatchError):
    """One or more workers died or failed; their parts keep their committed rows (resume finishes them)."""


@dataclass(frozen=True)
class WorkerSlot:
    """Where one worker runs: ``cuda_visible_devices`` is its GPU id, or "" for a CPU-only worker."""

    shard: Shard
    cuda_visible_devices: str

    @property
    def label(self) -> str:
        device = f"GPU {self.cuda_visible_devices}" if self.cuda_visible_devices else "CPU"
        return f"worker {self.shard.index} (shard {self.shard}, {device})"


def gpu_slots(spec: str) -> list[WorkerSlot]:
    """``--gpus``: "all" (the GPUs in CUDA_VISIBLE_DEVICES when set, else every GPU nvidia-smi/CuPy/torch
    lists) or a comma-separated list of GPU ids; one slot per GPU."""
    spec = spec.strip()
    if spec == "all":
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is not None:
            ids = [v.strip() for v in visible.split(",") if v.strip()]
        else:
            from allbatch.environment.gpu_probe import probe_gpus

            gpus, note = probe_gpus()
            ids = [str(gpu.index) for gpu in gpus]
            if not ids:
                raise UserInputError(f"--gpus all: {note}")
    else:
        ids = [v.strip() for v in spec.split(",")]
        if not all(ids) or len(set(ids)) != len(ids):
            raise UserInputError(f"--gpus takes 'all' or distinct GPU ids separated by commas (e.g. 0,1,2), got {spec!r}")
    if not ids:
        raise UserInputError("--gpus all: CUDA_VISIBLE_DEVICES lists no GPU")
    return [WorkerSlot(Shard(k, len(ids)), gpu) for k, gpu in enumerate(ids)]


def cpu_slots(workers: int) -> list[WorkerSlot]:
    """``--workers N``: N CPU-only worker processes (the same code path as ``--gpus``)."""
    if workers < 1:
        raise UserInputError(f"--workers must be at least 1, got {workers}")
    return [WorkerSlot(Shard(k, workers), "") for k in range(workers)]


def parts_folder(output: Path) -> Path:
    """Where the workers' part files live while a run is unfinished: ``<out>.parts`` beside the output."""
    return output.with_name(output.name + ".parts")


def part_path(folder: Path, shard: Shard) -> Path:
    return folder / f"part-{shard.index}-of-{shard.count}.h5"


def _prepare_parts_folder(config: RunConfig, folder: Path) -> None:
    """Refuse or clear what earlier runs left, as the mode says; create the parts folder. Called under the
    output's lock (the plan checked the output itself). A part still locked by a live process (a worker
    whose parent died, still finishing its chunk) is refused, naming that process, before anything is touched."""
    if folder.is_dir():
        held = held_locks(folder, "part-*-of-*.h5")
        if held:
            part, holder = held[0]
            raise UserInputError(locked_message(part, holder))
    if config.mode == "new":
        if folder.exists():
            raise UserInputError(f"{folder} holds the parts of an unfinished run; pass --resume to finish it or --overwrite to start again")
    elif config.mode == "resume":
        if config.output.exists() and not folder.exists():
            raise UserInputError(
                f"{config.output} is a finished run (no {folder.name} beside it); resume it in one process "
                "(without --workers/--gpus) or start again with --overwrite"
            )
    elif folder.exists():  # overwrite: only what this executor wrote there
        for leftover in folder.glob("part-*-of-*.h5"):
            leftover.unlink()
    folder.mkdir(exist_ok=True)


def _worker_process(slot: WorkerSlot, config: RunConfig, messages: Any) -> None:
    """Entry point of one worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides: a Ctrl-C there sends SIGTERM to the workers
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _signum, _frame: stop.set())  # a clean stop: the chunk in flight is committed
    stop_when_parent_dies(stop, messages)
    _worker_main(slot, config, messages, stop)


def stop_when_parent_dies(stop: threading.Event, messages: Any) -> threading.Thread | None:
    """In a worker process: a thread that waits for the parent to exit (however it ends, SIGKILL included) and
    then stops this worker cleanly: ``stop`` is set (the chunk in flight is committed; ``--resume`` finishes the
    part) and ``messages`` (a multiprocessing queue) no longer holds the process at exit. Nobody reads the
    queue any more, so its feeder thread blocks for ever on the full pipe, and a process joins that thread when
    it exits unless ``Queue.cancel_join_thread`` was called. Returns the thread (None outside a child process)."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return None

    def watch() -> None:
        parent.join()  # returns when the parent's end of the spawn pipe closes: the parent process has exited
        log.warning("the parent process (pid %s) is gone: stopping after the chunk in flight", parent.pid)
        messages.cancel_join_thread()
        stop.set()

    thread = threading.Thread(target=watch, name="allbatch-parent-watch", daemon=True)
    thread.start()
    return thread


def _worker_main(slot: WorkerSlot, config: RunConfig, messages: Any, stop: threading.Event | None = None) -> None:
    """Select the device, run the shard, report progress, the summary or the error to the parent."""
    os.environ["CUDA_VISIBLE_DEVICES"] = slot.cuda_visible_devices
    k = slot.shard.index

    def on_progress(progress: RunProgress) -> None:
        messages.put(("progress", k, progress.processed, progress.skipped, progress.total))

    try:
        summary = run(config, on_progress, stop)
    except AllbatchError as exc:
        messages.put(("error", k, str(exc)))
        raise SystemExit(1) from None
    messages.put(("done", k, summary))


def run_local(
    config: RunConfig, slots: list[WorkerSlot], progress: ProgressCallback | None = None, stop: threading.Event | None = None
) -> RunSummary:
    """Run ``config`` as one worker process per slot, then merge the parts into ``config.output``.

    Raises WorkerFailedError naming every worker that died or failed (nothing is merged then), and
    UserInputError/MergeError as a single run would. Returns the workers' summaries added up.
    ``stop`` (set on SIGINT/SIGTERM by the CLI): every worker is sent SIGTERM and stops cleanly after
    its chunk in flight; nothing is merged, the summary says ``interrupted`` and ``--resume`` finishes.
    """
    if config.shard is not None:
        raise UserInputError("--shard selects one part for one process; it cannot be combined with --workers/--gpus")
    with plan_run(config) as plan:
        return _run_planned(plan, slots, progress, stop)


def _run_planned(plan: RunPlan, slots: list[WorkerSlot], progress: ProgressCallback | None, stop: threading.Event | None) -> RunSummary:
    config = plan.config
    folder = parts_folder(Path(config.output))
    _prepare_parts_folder(config, folder)
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    workers: dict[int, tuple[WorkerSlot, BaseProcess]] = {}
    for slot in slots:
        worker_config = dataclasses.replace(config, output=part_path(folder, slot.shard), shard=slot.shard, mode="resume", group_by=None)
        process: BaseProcess = context.Process(target=_worker_process, args=(slot, worker_config, messages), name=slot.label)
        workers[slot.shard.index] = (slot, process)
    log.info("%d workers: %s; parts in %s", len(slots), ", ".join(slot.label for slot in slots), folder)
    try:
        for _, process in workers.values():
            process.start()
        summaries, errors = _watch(workers, messages, progress, stop or threading.Event())
    except BaseException:
        for _, process in workers.values():
            if process.is_alive():
                process.terminate()
        for _, process in workers.values():
            process.join()
        raise
    device = f"{len(slots)} workers: " + ", ".join(sorted({s.device for s in summaries.values()}))
    if (stop is not None and stop.is_set()) or any(summary.interrupted for summary in summaries.values()):
        # A worker that got SIGTERM before its handler was installed (still starting) ends by the signal:
        # that is this stop too, not a failure. Committed rows stay in the parts; nothing is merged.
        seconds = time.perf_counter() - started
        if summaries:
            total = add_up([summaries[k] for k in sorted(summaries)], config.output, seconds, device)
        else:
            total = Tally(len(plan.files)).summary(config.output, "none started", "none started", f"{len(slots)} workers", seconds)
        total.interrupted = True
        log.info("interrupted: the parts in %s keep their committed rows", folder)
        return total
    failures = []
    for k, (slot, process) in sorted(workers.items()):
        if k in summaries:
            continue
        code = process.exitcode
        why = errors.get(k) or (f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}")
        failures.append(f"{slot.label} failed: {why}")
    if failures:
        if not any(folder.glob("part-*-of-*.h5")):  # nothing was committed (e.g. the backend failed to start)
            shutil.rmtree(folder, ignore_errors=True)
            raise WorkerFailedError("; ".join(failures) + ". Nothing was written")
        raise WorkerFailedError(
            "; ".join(failures) + f". Finished and committed rows are kept in {folder}; run the same command with --resume to finish"
        )
    from allbatch.results.merge import merge_parts

    parts = [part_path(folder, slot.shard) for slot in slots]
    # The mode was checked once, under the lock held since planning: no other run can have written --out since.
    merge_parts(parts, config.output, overwrite=config.mode != "new", argv=config.argv, lock=plan.lock)
    for part in parts:
        part.unlink()
    shutil.rmtree(folder, ignore_errors=True)  # only lock files can be left in it now
    total = add_up([summaries[k] for k in sorted(summaries)], config.output, time.perf_counter() - started, device)
    total.groups = plan.write_groups()
    return total


def _watch(
    workers: dict[int, tuple[WorkerSlot, BaseProcess]], messages: Any, progress: ProgressCallback | None, stop: threading.Event
) -> tuple[dict[int, RunSummary], dict[int, str]]:
    """Relay progress until every worker has exited; the summaries of those that finished, and errors.
    When ``stop`` is set, each live worker is sent SIGTERM once (it stops cleanly)."""
    processed: dict[int, int] = {}
    skipped: dict[int, int] = {}
    totals: dict[int, int] = {}
    began = time.perf_counter()
    stopping = False
    summaries: dict[int, RunSummary] = {}
    errors: dict[int, str] = {}

    def handle(message: tuple[Any, ...]) -> None:
        kind, k = message[0], message[1]
        if kind == "progress":
            processed[k], skipped[k], totals[k] = message[2], message[3], message[4]
            if progress is not None:
                seconds = time.perf_counter() - began
                progress(RunProgress(sum(processed.values()), sum(skipped.values()), sum(totals.values()), seconds))
        elif kind == "done":
            summaries[k] = message[2]
        else:
            errors[k] = message[2]

    while any(process.is_alive() for _, process in workers.values()):
        if stop.is_set() and not stopping:
            stopping = True
            for _, process in workers.values():
                if process.is_alive():
                    process.terminate()  # SIGTERM: the worker's handler stops its run after the chunk in flight
        try:
            handle(messages.get(timeout=POLL_S))
        except queue.Empty:
            continue
    for _, process in workers.values():
        process.join()
    while True:  # what the workers sent just before exiting
        try:
            handle(messages.get(timeout=POLL_S))
        except queue.Empty:
            break
    return summaries, errors
