"""What a resumed run does with one discovered file, given the rows an earlier run committed.

Two steps, cheapest first: ``unchanged_by_stat`` compares the file's size, mtime_ns and ctime_ns with
the ones recorded when its committed row was written (no read, no hash); only when they differ (or
were not recorded) is the file read and ``plan`` decides by its sha256. A changed file therefore always
changes its stat: writing it sets mtime and ctime, and even a tool that restores the old mtime
(``touch -r``, ``rsync -t``) cannot restore ctime. A file changed (mtime or ctime) less than two
seconds before it was read is recorded with an unknown mtime (``allbatch.input.read.RACY_NS``) and is always
re-hashed, so a change within the same timestamp tick is not missed either.
"""

from __future__ import annotations

from typing import Literal

from allbatch.core.records import FileStat
from allbatch.core.status import REDONE_ON_RESUME
from allbatch.results.writer import CommittedRow

Plan = Literal["skip", "redo", "new"]


def unchanged_by_stat(committed: dict[str, CommittedRow], relpath: str, stat: FileStat | None) -> bool:
    """True when ``relpath`` has a committed, readable row whose recorded stat equals ``stat``: the file
    can be skipped without reading it. False means "read it and ask ``plan``"."""
    row = committed.get(relpath)
    if row is None or stat is None or row.status in REDONE_ON_RESUME:
        return False
    recorded = row.file_stat
    return min(recorded) >= 0 and recorded == (stat.size, stat.mtime_ns, stat.ctime_ns)


def plan(committed: dict[str, CommittedRow], relpath: str, sha256: str) -> Plan:
    """Decide for one file. "skip": the path was committed with the same content hash and was readable then.
    "redo": the path was committed but its bytes changed, or it was never hashed, or its status is one a resume
    retries (``REDONE_ON_RESUME``: unreadable, invalid model output); the caller marks the old row SUPERSEDED,
    see ``ResultsWriter.supersede``. "new": the path has no committed row.

    A decode error with an unchanged hash is skipped: the same bytes fail the same way again.
    """
    row = committed.get(relpath)
    if row is None:
        return "new"
    if not sha256 or row.sha256 != sha256 or row.status in REDONE_ON_RESUME:
        return "redo"
    return "skip"
