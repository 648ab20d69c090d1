"""The one exception family of allbatch; the CLI turns it into one line and exit code 1."""


class AllbatchError(Exception):
    """Base of every error allbatch raises on purpose (user input, missing backend, bad model)."""


class UserInputError(AllbatchError):
    """A missing folder, an existing output without --resume/--overwrite, a bad option value."""


class ModelError(AllbatchError):
    """A model artifact or manifest that is missing, corrupt, or does not match what it claims."""


class BackendUnavailableError(AllbatchError):
    """An explicitly requested backend or decoder that this machine cannot serve; says why."""


class ResultsFileError(AllbatchError):
    """A results.h5 that cannot be opened, resumed or appended to."""


class OutputWriteError(AllbatchError):
    """A file allbatch writes could not be written: the disk is full, a file-size limit or quota was reached, the
    target is read-only. Nothing half-written is left in place of the previous file (``core.atomic_file``)."""
