"""The ``/qc/flags`` bitfield: one bit per check, and the one-word reason shown per image.

Bit values are stable (they are written into results files); ``REASON_ORDER`` decides which reason
an image with several flags shows (the most basic problem first: an image that is not a usable smear
says so before it says the model is unsure about it).
"""

from __future__ import annotations

from enum import IntFlag

import numpy as np
import numpy.typing as npt


class QcFlag(IntFlag):
    """Why an image is doubtful. 0 means no check fired. Stored as uint16 in ``/qc/flags``."""

    BLURRED = 1 << 0  # Laplacian variance below the training range: out of focus or flat
    COLOUR = 1 << 1  # mean colour or chroma outside the training range: other stain, grey, photo
    SEGMENTATION = 1 << 2  # segmented fraction outside the training range (0 %: no blast-coloured pixel)
    COMPONENTS = 1 << 3  # number of segmented regions outside the training range
    SMALL = 1 << 4  # smaller than the training images (after scaling the size floor)
    OUTLIER = 1 << 5  # far from every class in feature space (Mahalanobis, l2-normalised features)
    ENERGY = 1 << 6  # energy above the training range: the model finds nothing it knows
    UNCERTAIN = 1 << 7  # low maximum probability or margin between the two best classes

    @property
    def word(self) -> str:
        """The one-word reason for this single flag, e.g. ``blurred``."""
        return (self.name or "").lower()

    @classmethod
    def bits_attr(cls) -> str:
        """The ``bit=name`` list stored as the ``bits`` attribute of ``/qc/flags``."""
        return ",".join(f"{member.value.bit_length() - 1}={member.word}" for member in cls)


REASON_ORDER = (
    QcFlag.SMALL,
    QcFlag.BLURRED,
    QcFlag.COLOUR,
    QcFlag.SEGMENTATION,
    QcFlag.COMPONENTS,
    QcFlag.OUTLIER,
    QcFlag.ENERGY,
    QcFlag.UNCERTAIN,
)


NOT_A_SMEAR = QcFlag.SMALL | QcFlag.BLURRED | QcFlag.COLOUR
"""The flags that say an image is not a usable smear (too small to read, out of focus or flat, not a smear's
stain or colours: a grey picture, a photograph, another stain), as opposed to the flags that say a smear is
doubtful (odd segmentation, far from the training images, unsure model: a smear the model may misread, still
a smear). With the shipped model none of these fires on the 496 validation smears (their 7 flags are all
``uncertain``, README, quality control). An image with any of them is counted as "not a smear":
its label stays in results.h5 but reaches no class total, verdict or evaluation (unless asked for)."""
NOT_A_SMEAR_WORD = "not a smear"
"""How such an image is counted wherever a class name would otherwise appear."""


def is_not_a_smear(flags: int) -> bool:
    """Whether an image's /qc/flags value holds one of the ``NOT_A_SMEAR`` flags."""
    return bool(flags & NOT_A_SMEAR)


def not_a_smear_mask(flags: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """(n,) bool: which of (n,) integer /qc/flags values hold a ``NOT_A_SMEAR`` flag."""
    return (np.asarray(flags).astype(np.int64) & int(NOT_A_SMEAR)) != 0


_REASON_BITS = tuple((int(flag), flag.word) for flag in REASON_ORDER)
"""REASON_ORDER as plain (bit, word) pairs: enum arithmetic is slow over 100,000 rows."""


def reason(flags: int) -> str:
    """One word for an image's flags: the first set flag in ``REASON_ORDER``, or "ok" when none is set."""
    for bit, word in _REASON_BITS:
        if flags & bit:
            return word
    return "ok"


def flag_words(flags: int) -> list[str]:
    """Every set flag's word, in ``REASON_ORDER``."""
    return [word for bit, word in _REASON_BITS if flags & bit]
