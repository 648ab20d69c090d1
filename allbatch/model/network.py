"""DenseNet (torchvision layout, written here: no downloaded weights) and the two-channel classifier."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 - the torch convention
from torch import nn

from allbatch.model.config import ModelConfig
from allbatch.model.statistics import ImageStatistics


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 conv (bottleneck) then BN-ReLU-3x3 conv producing ``growth_rate`` new maps."""

    def __init__(self, in_features: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_features)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_features, bn_size * growth_rate, kernel_size=1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, kernel_size=3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class DenseBlock(nn.ModuleDict):
    """``num_layers`` dense layers, each fed the concatenation of all previous maps."""

    def __init__(self, num_layers: int, in_features: int, growth_rate: int, bn_size: int) -> None:
        super().__init__()
        for i in range(num_layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(in_features + i * growth_rate, growth_rate, bn_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(torch.cat(features, 1)))
        return torch.cat(features, 1)


class Transition(nn.Sequential):
    """BN-ReLU-1x1 conv halving the maps, then 2x2 average pooling."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_features)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_features, out_features, kernel_size=1, bias=False)
        self.pool = nn.AvgPool2d(kernel_size=2, stride=2)


class DenseNetBackbone(nn.Module):
    """DenseNet feature extractor: (B, 3, H, W) float -> (B, num_features) pooled features."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        n = config.num_init_features
        self.features = nn.Sequential()
        self.features.add_module("conv0", nn.Conv2d(3, n, kernel_size=7, stride=2, padding=3, bias=False))
        self.features.add_module("norm0", nn.BatchNorm2d(n))
        self.features.add_module("relu0", nn.ReLU(inplace=True))
        self.features.add_module("pool0", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        for i, num_layers in enumerate(config.block_config):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(num_layers, n, config.growth_rate, config.bn_size))
            n += num_layers * config.growth_rate
            if i != len(config.block_config) - 1:
                self.features.add_module(f"transition{i + 1}", Transition(n, n // 2))
                n //= 2
        self.features.add_module("norm5", nn.BatchNorm2d(n))
        self.num_features = n
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.constant_(module.weight, 1.0)
                nn.init.constant_(module.bias, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps = F.relu(self.features(x))
        return torch.flatten(F.adaptive_avg_pool2d(maps, 1), 1)


class TwoChannelNet(nn.Module):
    """The paper's two-channel network with one backbone shared by both channels.

    Input (N, 2, 3, H, W) float32: channel 0 the original image, channel 1 the segmented one, both
    normalised as the manifest says. ``forward`` returns (N, num_classes) logits.

    A hybrid head (``config.extra["statistics"]`` = {"mean", "std", "rows", "bins"}: the input normalisation, the
    rows above the blanked band, histogram bins) sees the pooled features concatenated with the input's
    standardised colour and texture statistics (``allbatch.model.statistics``), computed in the graph.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = DenseNetBackbone(config)
        spec = config.extra.get("statistics")
        self.statistics = ImageStatistics(float(spec["mean"]), float(spec["std"]), int(spec["rows"]), int(spec["bins"])) if spec else None
        head_inputs = 2 * self.backbone.num_features + (self.statistics.num_statistics if self.statistics is not None else 0)
        self.head = nn.Sequential(nn.Dropout(config.head_dropout), nn.Linear(head_inputs, config.num_classes))
        head_linear = self.head[1]
        assert isinstance(head_linear, nn.Linear)
        nn.init.zeros_(head_linear.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2, 3, H, W) -> (N, 2 * F): both channels through the shared backbone, then concatenated."""
        n = x.shape[0]
        pooled = self.backbone(x.flatten(0, 1))  # (2N, F), rows alternate original / segmented
        return pooled.reshape(n, 2 * self.backbone.num_features)

    def head_inputs(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """What the head reads: the (N, 2F) pooled ``features``, with the (N, K) statistics of the (N, 2, 3, H, W)
        input ``x`` appended for a hybrid head (in the features' dtype)."""
        if self.statistics is None:
            return features
        return torch.cat([features, self.statistics(x).to(features.dtype)], dim=1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """The head on ``head_inputs``'s result."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.head_inputs(x, self.forward_features(x)))


class ExportedNet(nn.Module):
    """What is exported: (N, 2, 3, H, W) -> (probs, logits, features), the graph outputs of the manifest.

    ``features`` (N, 2F) are the pooled features of both channels, ``logits`` (N, C) the head's outputs
    divided by ``temperature`` (a graph constant, fitted on validation data; 1.0 = uncalibrated), and
    ``probs`` (N, C) their softmax. The temperature is a buffer outside ``net.``, so weights read back
    from the graph (``state_dict_from_onnx``) are the network's own.
    """

    def __init__(self, net: TwoChannelNet, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.net = net
        self.temperature: torch.Tensor
        self.register_buffer("temperature", torch.tensor(float(temperature), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.net.forward_features(x)
        logits = self.net.forward_head(self.net.head_inputs(x, features)) / self.temperature
        return torch.softmax(logits, dim=1), logits, features
