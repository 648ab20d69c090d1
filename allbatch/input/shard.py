"""Shards of the discovered list: shard K of N is a fixed, contiguous range of the discovered order.

Discovery is deterministic (``allbatch.input.discover``), so every process that discovers the same folder
gets the same list and the same ranges, with no padding and no overlap. A part file records its shard,
the total count and a digest of the whole discovered list (``DiscoveryRecord``) so that ``allbatch
merge`` can check that its parts cut up one and the same list.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from allbatch.core.errors import UserInputError
from allbatch.input.discover import DiscoveredFile

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UserInputError(f"shard {self.index}/{self.count}: need 0 <= K < N (K counts from 0)")

    def bounds(self, total: int) -> tuple[int, int]:
        """[start, stop) of this shard in a discovered list of ``total`` files: floor(K*total/N) to
        floor((K+1)*total/N). Sizes differ by at most one; a shard may be empty when N > total."""
        return self.index * total // self.count, (self.index + 1) * total // self.count

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """``"K/N"`` -> Shard(K, N); UserInputError with the expected form otherwise."""
    match = _SHARD.match(text)
    if match is None:
        raise UserInputError(f"--shard must look like K/N with 0 <= K < N (e.g. 0/4), got {text!r}")
    return Shard(int(match.group(1)), int(match.group(2)))


def discovery_digest(files: Sequence[DiscoveredFile]) -> str:
    """sha256 (hex) of the discovered relative paths in order, one per line: equal digests mean the
    same files in the same order, so the same shard ranges."""
    return paths_digest([item.relpath for item in files])


def paths_digest(relpaths: Sequence[str]) -> str:
    """``discovery_digest`` of bare relative paths (what ``allbatch merge`` rebuilds from the rows)."""
    digest = hashlib.sha256()
    for relpath in relpaths:
        digest.update(relpath.encode("utf-8", "surrogateescape"))
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class DiscoveryRecord:
    """What a results file records about the list its rows come from (root attribute ``discovery``).

    total: files discovered. sha256: ``discovery_digest`` of them. shard: "K/N" or None for a whole
    run; start/stop: the shard's range of the discovered order ([0, total) for a whole run).
    """

    total: int
    sha256: str
    shard: str | None
    start: int
    stop: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, value: Any, where: str) -> DiscoveryRecord:
        try:
            return cls(int(value["total"]), str(value["sha256"]), value["shard"], int(value["start"]), int(value["stop"]))
        except (TypeError, KeyError, ValueError):
            raise UserInputError(f"{where} has no valid discovery record; it was not written by allbatch run") from None

    @property
    def parsed_shard(self) -> Shard | None:
        return None if self.shard is None else parse_shard(self.shard)


def select(files: list[DiscoveredFile], shard: Shard | None) -> tuple[list[DiscoveredFile], DiscoveryRecord]:
    """The files of ``shard`` (all of them when None) and the record that describes the selection."""
    total = len(files)
    start, stop = (0, total) if shard is None else shard.bounds(total)
    record = DiscoveryRecord(total, discovery_digest(files), None if shard is None else str(shard), start, stop)
    return files[start:stop], record
