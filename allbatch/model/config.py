"""The architecture config that travels with the weights (in the manifest); no torch import here."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Two-channel DenseNet: one backbone shared by the original and the segmented image.

    The defaults are DenseNet201 (torchvision layout: growth 32, blocks 6-12-48-32, 64 stem features,
    1920 pooled features per channel, 3840 concatenated) with a linear head to 4 classes.
    """

    growth_rate: int = 32
    block_config: tuple[int, ...] = (6, 12, 48, 32)
    num_init_features: int = 64
    bn_size: int = 4
    num_classes: int = 4
    head_dropout: float = 0.2
    name: str = "densenet201_shared_2ch"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_features(self) -> int:
        """Pooled features per channel (1920 for DenseNet201)."""
        n = self.num_init_features
        for i, layers in enumerate(self.block_config):
            n += layers * self.growth_rate
            if i != len(self.block_config) - 1:
                n //= 2
        return n

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["block_config"] = list(self.block_config)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        values = dict(data)
        values["block_config"] = tuple(values["block_config"])
        return cls(**values)


DENSENET201 = ModelConfig()
TINY = ModelConfig(growth_rate=8, block_config=(2, 2, 2, 2), num_init_features=16, bn_size=2, name="tiny_shared_2ch")
"""Same code path, a few thousand parameters: for tests."""
