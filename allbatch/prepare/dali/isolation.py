"""Keep one bad file from failing a DALI batch: header pre-validation, then dropping the file DALI names.

DALI cannot skip a sample that fails to decode (DALI issue 3913): the whole batch raises. So:

1. ``allbatch.input.image_check.check_image`` (the acceptance rule shared with the Pillow path) refuses bad
   files on the host before the batch is built and returns each image's size for the rest.
2. A file that passes the check but fails in DALI (nvJPEG is stricter than libjpeg-turbo on some
   streams) is named by DALI's error ("Failed to decode sample #i"): ``drop_and_rerun`` records that
   item's error and runs the rest of the batch once more, on the same pipeline (issue 22: one bad file
   among 256 costs one extra run of its batch, not a bisect of pipeline rebuilds).
3. ``run_isolating`` is the fallback for errors that name no item (and for host out-of-memory): the batch
   is split in halves and each half is run again, down to single items, which are reported with their
   error.

Either way every item ends up in exactly one successful chunk or in the failures, in input order.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

log = logging.getLogger("allbatch.prepare.dali.isolation")

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Isolated(Generic[R]):
    """The outcome of ``run_isolating``.

    chunks: (positions into the items, run's result for exactly those items), in input order.
    failures: position -> the error that item raised when run alone.
    runs: how many times ``run`` was called.
    """

    chunks: list[tuple[list[int], R]] = field(default_factory=list)
    failures: dict[int, Exception] = field(default_factory=dict)
    runs: int = 0


def run_isolating(items: Sequence[T], run: Callable[[list[T]], R], is_item_error: Callable[[Exception], bool]) -> Isolated[R]:
    """Run ``items`` as one batch; on an item error bisect until the failing items stand alone.

    Args:
        items: the batch (may be empty).
        run: processes a non-empty list of items, all or nothing; it must be usable again after raising
            (the DALI runner rebuilds its pipeline).
        is_item_error: True for errors a bad item can cause (bisecting helps); anything else is re-raised
            at once, so a bug or a device out-of-memory is never turned into per-image statuses (the DALI
            preparer counts host out-of-memory as an item error: smaller runs need less memory).
    Returns:
        the successful chunks and the isolated failures; together they cover every position once.
    """
    outcome: Isolated[R] = Isolated()

    def attempt(positions: list[int]) -> None:
        outcome.runs += 1
        try:
            result = run([items[p] for p in positions])
        except Exception as exc:
            if not is_item_error(exc):
                raise
            if len(positions) == 1:
                outcome.failures[positions[0]] = exc
                return
            log.debug("batch of %d failed (%s); bisecting", len(positions), exc)
            half = len(positions) // 2
            attempt(positions[:half])
            attempt(positions[half:])
            return
        outcome.chunks.append((positions, result))

    if items:
        attempt(list(range(len(items))))
    return outcome


def drop_and_rerun(
    items: Sequence[T],
    error: Exception,
    run: Callable[[list[T]], R],
    is_item_error: Callable[[Exception], bool],
    failed_item: Callable[[Exception], int | None],
) -> Isolated[R]:
    """Finish a batch whose run over all ``items`` raised ``error``: drop the item each error names and run
    the others again, until a run succeeds; an error that names no item is bisected (``run_isolating``).

    Args:
        items: the batch that failed (non-empty).
        error: what running all of ``items`` raised (that run is counted in ``runs``).
        run: as for ``run_isolating``.
        is_item_error: as for ``run_isolating``; other errors are re-raised.
        failed_item: the position (in the list given to that run) of the item an error names, or None.
    Returns:
        the successful chunk(s) and the failures; together they cover every position once, in order.
    """
    outcome: Isolated[R] = Isolated(runs=1)
    positions = list(range(len(items)))
    while True:
        if not is_item_error(error):
            raise error
        index = failed_item(error)
        if index is None or not 0 <= index < len(positions):
            break
        outcome.failures[positions.pop(index)] = error
        if not positions:
            return outcome
        outcome.runs += 1
        try:
            result = run([items[p] for p in positions])
        except Exception as exc:  # noqa: BLE001 - examined at the top of the loop
            error = exc
            continue
        outcome.chunks.append((positions, result))
        return outcome
    log.debug("a batch of %d failed without naming an item (%s); bisecting", len(positions), error)
    rest = run_isolating([items[p] for p in positions], run, is_item_error)
    outcome.runs += rest.runs
    outcome.chunks.extend(([positions[i] for i in chunk], result) for chunk, result in rest.chunks)
    outcome.failures.update({positions[i]: exc for i, exc in rest.failures.items()})
    outcome.failures = dict(sorted(outcome.failures.items()))
    return outcome


_DALI_OPERATOR = re.compile(r"Error in (?:CPU|GPU|MIXED) operator `([^`]+)`", re.IGNORECASE)
_DALI_DETAIL = re.compile(r"encountered:\s*(.+?)(?:\nC\+\+ context|\nCurrent pipeline object|\Z)", re.DOTALL)
_DECODER_OPERATORS = ("nvidia.dali.fn.decoders.image",)


def dali_failed_operator(exc: Exception) -> str | None:
    """The DALI operator named in a pipeline error (e.g. "nvidia.dali.fn.decoders.image"), if any."""
    match = _DALI_OPERATOR.search(str(exc))
    return match.group(1) if match else None


_DALI_SAMPLE = re.compile(r"Failed to decode sample #(\d+)")


def failed_sample(exc: Exception) -> int | None:
    """The batch position of the sample a DALI decoder error names ("Failed to decode sample #i"), if any."""
    if not is_decode_error(exc):
        return None
    match = _DALI_SAMPLE.search(str(exc))
    return int(match.group(1)) if match else None


def is_decode_error(exc: Exception) -> bool:
    """True for a DALI error raised by the image decoder, the only operator a bad file makes fail."""
    return isinstance(exc, RuntimeError) and dali_failed_operator(exc) in _DECODER_OPERATORS


def is_host_memory_error(exc: Exception) -> bool:
    """True when a run failed for lack of host memory (Python's MemoryError, C++ std::bad_alloc).

    Bisecting helps (smaller runs need less memory) and an image that fails alone is recorded as
    too_large. GPU out-of-memory is not included: it says nothing about one image.
    """
    return isinstance(exc, MemoryError) or (isinstance(exc, RuntimeError) and "bad_alloc" in str(exc))


def dali_error_message(exc: Exception) -> str:
    """A one-line message from a DALI pipeline error, without its traceback or sample index."""
    text = str(exc)
    match = _DALI_DETAIL.search(text)
    detail = match.group(1) if match else text
    detail = re.sub(r"\s*sample #\d+\s*:?", " sample", " ".join(detail.split())).strip(" :")
    return f"DALI could not decode the image: {detail}" if detail else "DALI could not decode the image"
