"""Helpers for the results writer's crash tests, also run as a script in a subprocess:

``python results_crash_support.py child OUT N SEED [--sync] [--redo K]``
    a writer run that tests kill part-way: it resumes OUT (creating it when absent), skips the
    images an earlier run committed (resume.plan, as the pipeline does) and appends the rest in
    batches of random size (seeded), through a BackgroundWriter or, with --sync, directly.
``python results_crash_support.py replay OUT FIRST TOTAL REDO LOG...``
    rebuild OUT after every write recorded in the strace LOGs and check each state; prints a JSON
    summary. Run in a subprocess because HDF5 can loop forever on a corrupt file, which only a
    process timeout stops.

Image i's row is ``expected_row(i)``, a pure function of i, so any run order gives the same rows.
"""

from __future__ import annotations

import faulthandler
import hashlib
import io
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[2]  # run as a script: the repository root, without the tests' helpers on sys.path
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


from allbatch.core.status import ImageStatus  # noqa: E402
from allbatch.results.resume import plan  # noqa: E402
from allbatch.results.rows import ResultRows  # noqa: E402
from allbatch.results.writer import BackgroundWriter, ResultsWriter  # noqa: E402

STATE_TIMEOUT_S = 20
COMPAT = {"model_sha256": "0" * 64, "preprocessing": '{"size": 224}', "segmentation": '{"h": [168, 182]}'}


# ------------------------------------------------------------------ the rows
def image_path(i: int) -> str:
    return f"série {i // 100:03d}/ünïcode-細胞_{i:05d}.jpg"


def image_sha(i: int) -> str:
    return hashlib.sha256(f"image {i}".encode()).hexdigest()


def expected_row(i: int) -> tuple[str, str, int, str, np.ndarray, int, float]:
    """(path, sha256, status, error, probs (4,) float32, label, mask_fraction) of image i."""
    if i % 17 == 5:
        nan4 = np.full(4, np.nan, dtype=np.float32)
        return image_path(i), image_sha(i), int(ImageStatus.DECODE_ERROR), f"cannot decode image {i}: truncated", nan4, -1, float("nan")
    logits = np.random.default_rng(i).normal(size=4)
    probs = (np.exp(logits) / np.exp(logits).sum()).astype(np.float32)
    return image_path(i), image_sha(i), int(ImageStatus.OK), "", probs, int(probs.argmax()), float(np.float32((i % 1000) / 1000))


def rows_for(indices: list[int]) -> ResultRows:
    rows = [expected_row(i) for i in indices]
    return ResultRows(
        paths=[r[0] for r in rows],
        sha256=[r[1] for r in rows],
        status=np.array([r[2] for r in rows], dtype=np.int8),
        errors=[r[3] for r in rows],
        probs=np.stack([r[4] for r in rows]).astype(np.float32) if rows else np.zeros((0, 4), np.float32),
        labels=np.array([r[5] for r in rows], dtype=np.int8),
        mask_fraction=np.array([r[6] for r in rows], dtype=np.float32),
    )


class Expected:
    """The rows of images [0, n) as the columns a results file stores."""

    def __init__(self, n: int) -> None:
        rows = [expected_row(i) for i in range(n)]
        self.paths = [r[0] for r in rows]
        self.sha = np.array([r[1].encode() for r in rows], dtype="S64")
        self.status = np.array([r[2] for r in rows], dtype=np.int8)
        self.errors = [r[3] for r in rows]
        self.probs = np.stack([r[4] for r in rows])
        self.labels = np.array([r[5] for r in rows], dtype=np.int8)
        self.mask = np.array([r[6] for r in rows], dtype=np.float32)


def check_committed(f: h5py.File, expected: Expected, images: np.ndarray | None = None, loose: np.ndarray | None = None) -> int:
    """Assert rows [0, n_committed) hold exactly the expected rows; return n_committed.

    ``images``: the image index of each row (default: row j is image j). ``loose``: rows whose status
    may read either the expected one or SUPERSEDED (being superseded at that moment).
    """
    n = int(f["meta/n_committed"][0])
    which = np.arange(n) if images is None else images[:n]
    assert len(which) == n, f"n_committed {n} is more rows than were ever appended"
    strict = np.ones(n, dtype=np.bool_) if loose is None else ~loose[:n]
    assert f["images/path"].asstr()[:n].tolist() == [expected.paths[i] for i in which]
    np.testing.assert_array_equal(f["images/sha256"][:n], expected.sha[which])
    status = f["images/status"][:n]
    np.testing.assert_array_equal(status[strict], expected.status[which][strict])
    assert set(status[~strict].tolist()) <= {*expected.status[which][~strict].tolist(), int(ImageStatus.SUPERSEDED)}
    assert f["images/error"].asstr()[:n].tolist() == [expected.errors[i] for i in which]
    np.testing.assert_array_equal(f["pred/probs"][:n], expected.probs[which])
    np.testing.assert_array_equal(f["pred/label"][:n], expected.labels[which])
    np.testing.assert_array_equal(f["seg/mask_fraction"][:n], expected.mask[which])
    return n


# ------------------------------------------------------------------ the child run
def run(out: Path, n_images: int, seed: int, sync: bool = False, redo: int = 0, announce: bool = False) -> None:
    """Append the images of [0, n_images) not yet committed. ``redo`` (with ``sync``): afterwards mark
    rows [0, redo) SUPERSEDED and append those images again, supersede first (the order opposite
    to the pipeline's; both must be crash-safe). ``announce``: print "open" once the file is open,
    so that a test can time its kill from there, whatever the start-up took on a loaded machine."""
    rng = np.random.default_rng(seed)
    provenance = {"argv": ["results_crash_support.py", str(out), str(n_images), str(seed)], "backend": "test"}
    with ResultsWriter.open(out, mode="resume", provenance=provenance, compat=COMPAT, expected_rows=n_images) as writer:
        if announce:
            print("open", flush=True)
        committed = writer.committed()
        todo = [i for i in range(n_images) if plan(committed, image_path(i), image_sha(i)) != "skip"]
        batches: list[list[int]] = []
        while todo:
            size = int(rng.integers(1, 49))
            batches.append(todo[:size])
            todo = todo[size:]
        if sync:
            for batch in batches:
                writer.append(rows_for(batch))
            if redo:
                writer.supersede(list(range(redo)))
                writer.append(rows_for(list(range(redo))))
            return
        background = BackgroundWriter(writer)
        try:
            for batch in batches:
                background.submit(rows_for(batch))
        finally:
            background.close()


# ------------------------------------------------------------------ write-log replay (strace -xx)
_CALL = re.compile(r"^\d+\s+(\w+)\((.*)\)\s+=\s+(-?\d+)")
_STRING = re.compile(r'"((?:\\x[0-9a-f]{2})*)"')
_PWRITE = re.compile(r'(\d+), "([^"]*)", (\d+), (\d+)')


def _unhex(text: str) -> bytes:
    return bytes.fromhex(text.replace("\\x", ""))


def parse_strace(log: Path) -> list[tuple]:
    """(kind, ...) for the openat, close, pwrite64, ftruncate and rename calls that succeeded."""
    events: list[tuple] = []
    for line in log.read_text(encoding="latin-1").splitlines():
        match = _CALL.match(line)
        if match is None or int(match.group(3)) < 0:
            continue
        call, args, ret = match.group(1), match.group(2), int(match.group(3))
        if call == "openat":
            name = _STRING.search(args)
            if name is not None:
                events.append(("open", _unhex(name.group(1)).decode(), ret, "O_TRUNC" in args, "O_CREAT" in args))
        elif call == "close":
            events.append(("close", int(args)))
        elif call == "pwrite64":
            write = _PWRITE.match(args)
            assert write is not None, line[:200]
            data = _unhex(write.group(2))
            assert len(data) == int(write.group(3)) == ret, "strace shortened a buffer: raise -s"
            events.append(("pwrite", int(write.group(1)), data, int(write.group(4))))
        elif call == "ftruncate":
            fd, size = args.split(", ")
            events.append(("truncate", int(fd), int(size)))
        elif call in ("rename", "renameat", "renameat2"):
            names = [_unhex(s).decode() for s in _STRING.findall(args)]
            events.append(("rename", names[0], names[1]))
    return events


def crash_states(events: list[tuple], target: str) -> Iterator[bytes]:
    """The bytes at ``target`` after each event that changes them, plus each page-prefix of every
    multi-page write to it (a SIGKILL can stop a write between pages; completed writes survive)."""
    files: dict[str, bytearray] = {}
    fds: dict[int, bytearray] = {}

    def put(buf: bytearray, offset: int, data: bytes) -> None:
        if offset + len(data) > len(buf):
            buf.extend(b"\0" * (offset + len(data) - len(buf)))
        buf[offset : offset + len(data)] = data

    for event in events:
        if event[0] == "open":
            _, name, fd, truncate, create = event
            if name not in files and not create:
                continue
            buf = files.setdefault(name, bytearray())
            if truncate:
                del buf[:]
            fds[fd] = buf
        elif event[0] == "close":
            fds.pop(event[1], None)
        elif event[0] == "pwrite" and event[1] in fds:
            buf, data, offset = fds[event[1]], event[2], event[3]
            visible = files.get(target) is buf
            if visible:
                for cut in range((offset // 4096 + 1) * 4096, offset + len(data), 4096):
                    torn = bytearray(buf)
                    put(torn, offset, data[: cut - offset])
                    yield bytes(torn)
            put(buf, offset, data)
            if visible:
                yield bytes(buf)
        elif event[0] == "truncate" and event[1] in fds:
            buf = fds[event[1]]
            del buf[event[2] :]
            buf.extend(b"\0" * (event[2] - len(buf)))
            if files.get(target) is buf:
                yield bytes(buf)
        elif event[0] == "rename" and event[1] in files:
            files[event[2]] = files.pop(event[1])
            if event[2] == target:
                yield bytes(files[target])


def replay(target: str, first: int, total: int, redo: int, logs: list[Path]) -> dict[str, object]:
    """Check every crash state of ``target`` for runs ``child first --redo redo`` then ``child total``."""
    events = [event for log in logs for event in parse_strace(log)]
    expected = Expected(total)
    # row j: image j for the first run, then the redone images, then the second run's images
    images = np.concatenate([np.arange(first), np.arange(redo), np.arange(first, total)])
    loose = np.arange(len(images)) < redo  # the rows being superseded
    previous, states = 0, 0
    for content in crash_states(events, target):
        states += 1
        # HDF5 can loop forever on a corrupt file: a watchdog thread ends the process instead
        faulthandler.dump_traceback_later(STATE_TIMEOUT_S, exit=True)
        print(f"crash point {states}: {len(content)} bytes", file=sys.stderr, flush=True)
        with h5py.File(io.BytesIO(content), "r") as f:
            n = check_committed(f, expected, images, loose)
        faulthandler.cancel_dump_traceback_later()
        assert n >= previous, f"crash point {states}: committed rows went from {previous} to {n}"
        previous = n
    return {"states": states, "pwrites": sum(1 for e in events if e[0] == "pwrite"), "final_n": previous}


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "child":
        options = args[3:]
        redo = int(options[options.index("--redo") + 1]) if "--redo" in options else 0
        run(Path(args[0]), int(args[1]), int(args[2]), sync="--sync" in options, redo=redo, announce="--announce" in options)
    elif command == "replay":
        summary = replay(args[0], int(args[1]), int(args[2]), int(args[3]), [Path(p) for p in args[4:]])
        print(json.dumps(summary))
    else:
        raise SystemExit(f"unknown command {command!r}")
