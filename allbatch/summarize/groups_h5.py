"""Store the per-folder table in results.h5 as ``/groups`` (derived data, rewritten after every run).

```
/groups              attrs: group_by ("parent" or a depth), rule (text), min_usable, min_share, class_names
/groups/name         vlen utf-8 (G,)   folder, relative to the input root ("." for the root)
/groups/counts       int64 (G, 5)      images, ok, failed, flagged, usable (attribute ``columns``)
/groups/mean_probs   float32 (G, C)    mean probability per class over the usable images (NaN if none)
/groups/votes        int64 (G, C)      usable images per predicted class
/groups/verdict      vlen utf-8 (G,)   a class name, "insufficient" or "discordant"
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
from allbatch.results.schema import open_for_writing, open_h5
from allbatch.summarize.groups import GroupTable

GROUPS = "groups"
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
            group.attrs["min_share"] = table.rule.min_share
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


def read_groups(path: Path) -> dict[str, object] | None:
    """``/groups`` as plain Python values (name, counts, mean_probs, votes, verdict, attrs), None when absent."""
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
        }
