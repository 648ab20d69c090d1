"""Per-image status codes stored in ``/images/status`` (int8); names go into the dataset's attributes."""

from enum import IntEnum


class ImageStatus(IntEnum):
    """Outcome for one input file. Values are stable: they are written into results files."""

    OK = 0
    DECODE_ERROR = 1  # bytes read, but not a decodable image (truncated, random bytes, bad header)
    UNREADABLE = 2  # the file or folder could not be read (permissions, I/O error, vanished)
    UNSUPPORTED = 3  # decodable container with content we refuse (e.g. an unsupported pixel mode)
    EMPTY = 4  # zero-byte file
    TOO_LARGE = 5  # more pixels than the configured limit; refused to keep memory bounded
    SUPERSEDED = 6  # an older row for a path whose file changed; a later row holds the new result
    MODEL_OUTPUT_ERROR = 7  # the model's output for this image is not a result (NaN, inf, not probabilities)

    @classmethod
    def names_attr(cls) -> str:
        """The ``value=NAME`` list stored as the ``names`` attribute of ``/images/status``."""
        return ",".join(f"{member.value}={member.name.lower()}" for member in cls)


FAILED_STATUSES = frozenset(
    {
        ImageStatus.DECODE_ERROR,
        ImageStatus.UNREADABLE,
        ImageStatus.UNSUPPORTED,
        ImageStatus.EMPTY,
        ImageStatus.TOO_LARGE,
        ImageStatus.MODEL_OUTPUT_ERROR,
    }
)
"""Statuses that count as a failed image (exit code 3 when any is present)."""

REDONE_ON_RESUME = frozenset({ImageStatus.UNREADABLE, ImageStatus.MODEL_OUTPUT_ERROR})
"""Failed statuses a resume redoes even when the file is unchanged: the failure may not repeat (the file becomes
readable, the model runs at another precision), where a decode error of the same bytes always does."""


def status_name(value: int) -> str:
    """The name stored for a status value ("ok", "decode_error", ...), or "status_<value>" for a value this
    version does not know (a file written by a newer allbatch: readers show it, never fail on it)."""
    try:
        return ImageStatus(value).name.lower()
    except ValueError:
        return f"status_{value}"
