"""Checks every backend runs on a batch before inference: shape and dtype against the model manifest."""

from __future__ import annotations

from allbatch.core.errors import UserInputError
from allbatch.model.manifest import ModelManifest


class InvalidBatchError(UserInputError, ValueError):
    """A batch whose shape, dtype or memory location does not fit the model or the backend."""


def sample_shape(manifest: ModelManifest) -> tuple[int, ...]:
    """The per-sample input shape the manifest declares, e.g. (2, 3, 224, 224) for ``["N", 2, 3, 224, 224]``."""
    return tuple(int(dim) for dim in manifest.input_shape[1:])


def validate_batch(shape: tuple[int, ...], dtype: str, manifest: ModelManifest, backend: str) -> None:
    """Raise InvalidBatchError unless ``shape`` is (N, *sample_shape) and ``dtype`` is "float32".

    ``dtype`` is the element type's name as NumPy spells it ("float32"); torch's "torch.float32" is accepted.
    """
    expected = sample_shape(manifest)
    if len(shape) != len(expected) + 1 or tuple(shape[1:]) != expected:
        wanted = ", ".join(["N", *(str(dim) for dim in expected)])
        raise InvalidBatchError(f"{backend}: batch shape {tuple(shape)} does not match the model input ({wanted})")
    name = dtype.removeprefix("torch.")
    if name != "float32":
        raise InvalidBatchError(f"{backend}: batch dtype {name} is not float32 (the model input is normalised float32)")
