"""Cheap checks of the output path, run before the model or any inference runtime loads.

``allbatch run`` calls ``check_output`` right after discovering the input, so that "output exists",
"folder missing", "is a folder", "is not a results file" and "another run is writing it" come back in
milliseconds instead of after the model has loaded. Nothing here creates or changes a file.
``ResultsWriter.open`` checks again under its lock (the state may change in between); this module
only moves the refusal earlier and makes it say the right thing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from allbatch.core.errors import UserInputError
from allbatch.results.lock import lock_holder, locked_message

WriteMode = Literal["new", "resume", "overwrite"]


def _is_hdf5(path: Path) -> bool:
    import h5py

    try:
        return bool(h5py.is_hdf5(path))
    except OSError:
        return False


def check_output(output: Path, mode: WriteMode) -> None:
    """Refuse, with one line, an output that ``mode`` cannot write; returns None when it can.

    - the folder must exist, and ``output`` must not be a folder (whatever the mode);
    - "new": ``output`` must not exist; "resume" and "overwrite": an existing ``output`` must be an
      HDF5 file (a CSV or a photo is never replaced or appended to by mistake);
    - no other run may be writing it.
    """
    output = Path(output)
    if output.is_dir():
        raise UserInputError(f"--out {output} is a folder; name a file, e.g. {output / 'results.h5'}")
    if not output.parent.is_dir():
        raise UserInputError(f"the folder for {output} does not exist")
    if output.exists():
        if not output.is_file():
            raise UserInputError(f"--out {output} exists and is not a regular file")
        if mode == "new":
            raise UserInputError(f"{output} already exists; pass --resume to continue it or --overwrite to replace it")
        if not _is_hdf5(output):
            verb = "replace" if mode == "overwrite" else "resume"
            raise UserInputError(f"{output} exists and is not an allbatch results file (not HDF5); refusing to {verb} it")
    holder = lock_holder(output)
    if holder is not None:
        raise UserInputError(locked_message(output, holder))
