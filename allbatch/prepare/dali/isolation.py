"""Keep one bad file from failing a DALI batch: header pre-validation, then a bisecting retry.

DALI cannot skip a sample that fails to decode (DALI issue 3913): the whole batch raises. So:

1. ``allbatch.input.image_check.check_image`` (the acceptance rule shared with the Pillow path) refuses bad
   files on the host before the batch is built and returns each image's size for the rest.
2. ``run_isolating`` runs a batch through any ``run(list) -> result`` callable; when it raises an
   error that belongs to an item (``is_item_error``), the batch is split in halves and each half is
   run again, down to single items, which are reported with their error. Every item ends up in
   exactly one successful chunk or in the failures, in input order.
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


_DALI_OPERATOR = re.compile(r"Error in (?:CPU|GPU|MIXED) operator `([^`]+)`", re.IGNORECASE)
_DALI_DETAIL = re.compile(r"encountered:\s*(.+?)(?:\nC\+\+ context|\nCurrent pipeline object|\Z)", re.DOTALL)
_DECODER_OPERATORS = ("nvidia.dali.fn.decoders.image",)


def dali_failed_operator(exc: Exception) -> str | None:
    """The DALI operator named in a pipeline error (e.g. "nvidia.dali.fn.decoders.image"), if any."""
    match = _DALI_OPERATOR.search(str(exc))
    return match.group(1) if match else None


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
