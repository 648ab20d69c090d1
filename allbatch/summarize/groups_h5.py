"""Store the per-folder table in results.h5 as ``/groups`` (derived data, rewritten after every run).

```
/groups              attrs: group_by ("parent" or a depth), rule (text, with its rates), min_usable, min_share (the
                     subtype share), class_names; since the error-rate rule also alpha, confidence, error_rate (the
                     upper bound used), benign_errors, benign_images, rate_source (absent: the model has no rate)
/groups/name         vlen utf-8 (G,)   folder, relative to the input root ("." for the root)
/groups/counts       int64 (G, 5)      images, ok, failed, flagged, usable (attribute ``columns``)
/groups/mean_probs   float32 (G, C)    mean probability per class over the usable images (NaN if none)
/groups/votes        int64 (G, C)      usable images per predicted class
/groups/verdict      vlen utf-8 (G,)   "Benign", "ALL (Early Pre-B)"..., "ALL, subtype mixed", "insufficient",
                                       "no error rate" (files written before the error-rate rule: a class name or
                                       "discordant")
/groups/not_a_smear  int64 (G,)        ok images flagged as not a smear (part of flagged); absent in older files
/groups/benign_tail  float64 (G,)      P(at least the folder's ALL votes | Benign) at ``error_rate``; NaN when not
                                       computed; absent in older files
```
The file is rewritten whole beside itself and renamed over (like the writer's compaction), so a kill
while the table is written leaves the previous file intact. A resume drops ``/groups``; the run that
finishes writes it again from all live rows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np

from allbatch.core.atomic_file import replacing
from allbatch.results.reader import read_results
from allbatch.results.schema import GROUPS, open_for_writing, open_h5
from allbatch.summarize.groups import GroupTable, summarize_groups

COUNT_COLUMNS = ("images", "ok", "failed", "flagged", "usable")
FOLDER_TABLE_NOT_WRITTEN = "its rows are complete, without the folder table (/groups): free space and re-run with --resume to add it"
"""What a failed write of ``/groups`` leaves (the results file as it was before, complete)."""


def write_groups(path: Path, table: GroupTable) -> None:
    """Replace ``/groups`` in the results file ``path`` by ``table`` (atomically: copy, write, rename).
    Call with the output's lock held (the run plan holds it): a copy of the file is rewritten whole."""
    path = Path(path)
    with replacing(path, FOLDER_TABLE_NOT_WRITTEN) as tmp:
        shutil.copyfile(path, tmp)
        with open_for_writing(tmp, "r+") as f:
            if GROUPS in f:
                del f[GROUPS]
            group = f.create_group(GROUPS)
            group.attrs["group_by"] = table.group_by
            group.attrs["rule"] = table.rule.describe()
            group.attrs["min_usable"] = table.rule.min_usable
            group.attrs["min_share"] = table.rule.subtype_share
            group.attrs["alpha"] = table.rule.alpha
            group.attrs["confidence"] = table.rule.confidence
            errors = table.rule.benign_errors
            if errors is not None:
                group.attrs["error_rate"] = table.rule.error_rate
                group.attrs["benign_errors"] = errors.errors
                group.attrs["benign_images"] = errors.images
                group.attrs["rate_source"] = errors.source
            group.attrs["class_names"] = np.array(table.class_names, dtype=h5py.string_dtype("utf-8"))
            string = h5py.string_dtype("utf-8")
            k = len(table.class_names)
            rows = table.groups
            group.create_dataset("name", data=np.array([g.name for g in rows], dtype=object), dtype=string)
            counts = np.array([[g.images, g.ok, g.failed, g.flagged, g.usable] for g in rows], dtype=np.int64).reshape(-1, 5)
            group.create_dataset("counts", data=counts).attrs["columns"] = ",".join(COUNT_COLUMNS)
            group.create_dataset("mean_probs", data=np.array([g.mean_probs for g in rows], dtype=np.float32).reshape(-1, k))
            group.create_dataset("votes", data=np.array([g.votes for g in rows], dtype=np.int64).reshape(-1, k))
            group.create_dataset("verdict", data=np.array([g.verdict for g in rows], dtype=object), dtype=string)
            group.create_dataset("not_a_smear", data=np.array([g.not_a_smear for g in rows], dtype=np.int64))
            group.create_dataset("benign_tail", data=np.array([g.benign_tail for g in rows], dtype=np.float64))


def store_groups(path: Path, group_by: str) -> GroupTable:
    """Per-folder verdicts of every live row of the results file ``path`` (``summarize_groups``), stored as its
    ``/groups`` (``write_groups``). Call with the output's lock held: a run at its end, ``merge`` after merging."""
    table = summarize_groups(read_results(path), group_by)
    write_groups(path, table)
    return table


def group_by_of(path: Path) -> str | None:
    """The ``group_by`` the stored ``/groups`` of ``path`` was made with, None when it has none."""
    with open_h5(Path(path), "r") as f:
        return str(f[GROUPS].attrs["group_by"]) if GROUPS in f else None


def read_groups(path: Path) -> dict[str, object] | None:
    """``/groups`` as plain Python values (name, counts, mean_probs, votes, verdict, attrs, and not_a_smear and
    benign_tail when the file has them), None when absent."""
    with open_h5(Path(path), "r") as f:
        if GROUPS not in f:
            return None
        group = f[GROUPS]
        return {
            "name": group["name"].asstr()[:].tolist(),
            "counts": group["counts"][:],
            "mean_probs": group["mean_probs"][:],
            "votes": group["votes"][:],
            "verdict": group["verdict"].asstr()[:].tolist(),
            "attrs": {key: group.attrs[key] for key in group.attrs},
            **{key: group[key][:] for key in ("not_a_smear", "benign_tail") if key in group},
        }
