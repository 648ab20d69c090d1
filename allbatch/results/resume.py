"""What a resumed run does with one discovered file, given the rows an earlier run committed."""

from __future__ import annotations

from typing import Literal

from allbatch.results.writer import CommittedRow
from allbatch.status import ImageStatus

Plan = Literal["skip", "redo", "new"]


def plan(committed: dict[str, CommittedRow], relpath: str, sha256: str) -> Plan:
    """Decide for one file. "skip": the path was committed with the same content hash and was readable then.
    "redo": the path was committed but its bytes changed, or it was unreadable (the caller marks the
    old row SUPERSEDED, see ``ResultsWriter.supersede``). "new": the path has no committed row.

    A decode error with an unchanged hash is skipped: the same bytes fail the same way again.
    """
    row = committed.get(relpath)
    if row is None:
        return "new"
    if row.sha256 != sha256 or row.status == ImageStatus.UNREADABLE:
        return "redo"
    return "skip"
