"""Colour and texture statistics of the model input, computed inside the graph (the hybrid head's second input).

Every backend (ONNX Runtime, OpenVINO, TensorRT, torch) computes them from the same (N, 2, 3, S, S) input the
backbone sees, so no runtime re-implements them. They are smooth functions of the pixels (triangular soft
histograms, means, standard deviations, mean absolute differences): no hard bin edge that a reduced-precision
runtime could move a pixel across. ``tests/unit/model/test_statistics.py`` checks them against a NumPy reference.

Pixels are on the 0..1 scale (``p = x * std + mean``). Channel 0 (the original) is read above the blanked
bottom band; cells are the pixels of channel 1 (the segmented image) brighter than ``MASK_LEVEL`` (the
segmentation writes black elsewhere), weighted 1, others 0.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the torch convention
from torch import nn

HISTOGRAM_BINS = 12
"""Triangular bins per channel, centres at k / (bins - 1) on 0..1, each as wide as the spacing."""
HISTOGRAM_STRIDE = 4
"""Histograms read every 4th pixel of every 4th row: a sixteenth of the arithmetic, the same colour distribution."""
LUMA = (0.299, 0.587, 0.114)
"""Grey = Rec. 601 luma of R, G, B (as quality control's blur measure)."""
MASK_LEVEL = 0.5 / 255.0
"""A segmented pixel whose brightest channel exceeds this (0..1 scale) is a cell pixel."""
TEXTURE_SCALES = (2, 4, 8)
"""Average-pooling windows whose grey standard deviation measures contrast at that scale."""
EPS = 1e-6


def statistic_names(bins: int = HISTOGRAM_BINS) -> list[str]:
    """The names of the K statistics, in the order ``ImageStatistics`` returns them."""
    rgb, seg = ("r", "g", "b"), ("v", "s", "h")  # the segmented image holds (V, S, H) as RGB
    names = [f"image_mean_{c}" for c in rgb] + [f"image_std_{c}" for c in rgb] + ["image_chroma", "image_b_minus_g", "image_r_minus_g"]
    names += [f"image_hist_{c}{k}" for c in rgb for k in range(bins)]
    names += ["cell_fraction"] + [f"cell_mean_{c}" for c in rgb] + [f"cell_std_{c}" for c in rgb]
    names += [f"cell_seg_mean_{c}" for c in seg] + [f"cell_seg_std_{c}" for c in seg]
    names += [f"cell_hist_{c}{k}" for c in rgb for k in range(bins)] + [f"cell_seg_hist_{c}{k}" for c in seg for k in range(bins)]
    names += ["grey_grad_x", "grey_grad_y", "grey_laplacian", "cell_grad_x", "cell_grad_y", "cell_laplacian"]
    names += [f"grey_std_pool{s}" for s in TEXTURE_SCALES] + ["mask_edges", "grey_neighbour_corr"]
    return names


class ImageStatistics(nn.Module):
    """(N, 2, 3, S, S) float32 normalised model input -> (N, K) float32 statistics (``statistic_names`` order).

    The output is standardised as ``(s - shift) * scale`` with (K,) buffers fitted on training images (0 and 1
    until then). The statistics are always computed in float32 and the buffers stay float32 when the network is
    cast to half (``_apply``): a shift rounded to fp16 and multiplied by a large scale would move a statistic by
    whole standard deviations. The output has the input's dtype.

    Args:
        mean, std: the manifest's normalisation (``p = x * std + mean``).
        rows: rows of the S x S input above the blanked bottom band (the original's statistics read only those;
            the segmented image is black in the band, so its statistics need no cut).
        bins: triangular histogram bins per channel.
    """

    def __init__(self, mean: float, std: float, rows: int, bins: int = HISTOGRAM_BINS) -> None:
        super().__init__()
        self.mean, self.std, self.rows, self.bins = float(mean), float(std), int(rows), int(bins)
        count = len(statistic_names(self.bins))
        self.luma: torch.Tensor
        self.shift: torch.Tensor
        self.scale: torch.Tensor
        self.register_buffer("luma", torch.tensor(LUMA, dtype=torch.float32).reshape(1, 3, 1, 1))
        self.register_buffer("shift", torch.zeros(count, dtype=torch.float32))
        self.register_buffer("scale", torch.ones(count, dtype=torch.float32))

    def _apply(self, fn: Any, recurse: bool = True) -> ImageStatistics:
        """Moves follow ``fn`` (device), but the buffers stay float32 (see the class docstring)."""
        exact = {name: buffer.detach().clone() for name, buffer in self._buffers.items() if buffer is not None}
        super()._apply(fn, recurse)
        for name, buffer in exact.items():
            moved = self._buffers[name]
            assert moved is not None
            self._buffers[name] = buffer.to(device=moved.device, dtype=torch.float32)
        return self

    @property
    def num_statistics(self) -> int:
        return len(statistic_names(self.bins))

    def soft_histogram(self, pixels: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) pixels 0..1 and (N, 1, H, W) weights -> (N, 3 * bins) weighted triangular histograms,
        each channel's bins summing to 1 (the weighted share of pixels near each centre), read on the
        ``HISTOGRAM_STRIDE`` grid."""
        pixels = pixels[:, :, ::HISTOGRAM_STRIDE, ::HISTOGRAM_STRIDE]
        weight = weight[:, :, ::HISTOGRAM_STRIDE, ::HISTOGRAM_STRIDE]
        total = weight.sum(dim=(2, 3)) + EPS  # (N, 1)
        scaled = pixels * float(self.bins - 1)  # bin centres at the integers 0 .. bins - 1, width 1
        parts = []
        for k in range(self.bins):  # one (N, 3, H, W) temporary at a time, not (N, 3, H, W, bins)
            membership = F.relu(1.0 - torch.abs(scaled - float(k)))
            parts.append((membership * weight).sum(dim=(2, 3)) / total)  # (N, 3)
        return torch.stack(parts, dim=2).flatten(1)  # (N, 3, bins) -> channel-major

    @staticmethod
    def weighted_moments(pixels: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, 3, H, W), (N, 1, H, W) -> weighted mean and standard deviation per channel, (N, 3) each."""
        total = weight.sum(dim=(2, 3)) + EPS
        mean = (pixels * weight).sum(dim=(2, 3)) / total
        variance = ((pixels - mean[:, :, None, None]) ** 2 * weight).sum(dim=(2, 3)) / total
        return mean, torch.sqrt(variance + EPS)

    @staticmethod
    def gradients(grey: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, 1, H, W) -> |horizontal|, |vertical| differences and |4-neighbour Laplacian|, each (N, 1, H-2, W-2)."""
        centre = grey[:, :, 1:-1, 1:-1]
        grad_x = torch.abs(grey[:, :, 1:-1, 2:] - grey[:, :, 1:-1, :-2])
        grad_y = torch.abs(grey[:, :, 2:, 1:-1] - grey[:, :, :-2, 1:-1])
        laplacian = torch.abs(grey[:, :, :-2, 1:-1] + grey[:, :, 2:, 1:-1] + grey[:, :, 1:-1, :-2] + grey[:, :, 1:-1, 2:] - 4.0 * centre)
        return grad_x, grad_y, laplacian

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.raw(x.float()) - self.shift) * self.scale).to(x.dtype)

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 2, 3, S, S) float32 -> (N, K) float32 statistics before the standardisation."""
        pixels = x * self.std + self.mean  # (N, 2, 3, S, S) on 0..1
        image = pixels[:, 0, :, : self.rows, :]  # (N, 3, R, S)
        cells_seg = pixels[:, 1]  # (N, 3, S, S): (V, S, H) of cell pixels, 0 elsewhere
        n = x.shape[0]
        ones = torch.ones_like(image[:, :1])
        image_mean, image_std = self.weighted_moments(image, ones)
        chroma = (image.amax(dim=1) - image.amin(dim=1)).mean(dim=(1, 2))[:, None]
        image_hist = self.soft_histogram(image, ones)

        mask = (cells_seg.amax(dim=1, keepdim=True) > MASK_LEVEL).float()  # (N, 1, S, S)
        cell_fraction = mask.mean(dim=(2, 3))
        cell_image = pixels[:, 0]  # the original at the cell pixels (the band holds no cell: segmented is black there)
        cell_mean, cell_std = self.weighted_moments(cell_image, mask)
        seg_mean, seg_std = self.weighted_moments(cells_seg, mask)
        cell_hist = self.soft_histogram(cell_image, mask)
        seg_hist = self.soft_histogram(cells_seg, mask)

        grey = (image * self.luma).sum(dim=1, keepdim=True)  # (N, 1, R, S)
        grad_x, grad_y, laplacian = self.gradients(grey)
        texture = [grad_x.mean(dim=(1, 2, 3)), grad_y.mean(dim=(1, 2, 3)), laplacian.mean(dim=(1, 2, 3))]
        cell_grey = (cell_image * self.luma).sum(dim=1, keepdim=True)
        cell_inner = mask[:, :, 1:-1, 1:-1]
        inner_total = cell_inner.sum(dim=(1, 2, 3)) + EPS
        texture += [(g * cell_inner).sum(dim=(1, 2, 3)) / inner_total for g in self.gradients(cell_grey)]
        texture += [F.avg_pool2d(grey, s, s).flatten(1).std(dim=1) for s in TEXTURE_SCALES]
        edges = torch.abs(mask[:, :, :, 1:] - mask[:, :, :, :-1]).mean(dim=(1, 2, 3)) + torch.abs(mask[:, :, 1:] - mask[:, :, :-1]).mean(
            dim=(1, 2, 3)
        )
        centred = grey - grey.mean(dim=(2, 3), keepdim=True)
        corr = (centred[:, :, :, 1:] * centred[:, :, :, :-1]).mean(dim=(1, 2, 3)) / (centred.pow(2).mean(dim=(1, 2, 3)) + EPS)
        columns = [
            image_mean,
            image_std,
            chroma,
            (image_mean[:, 2] - image_mean[:, 1])[:, None],
            (image_mean[:, 0] - image_mean[:, 1])[:, None],
            image_hist,
            cell_fraction,
            cell_mean,
            cell_std,
            seg_mean,
            seg_std,
            cell_hist,
            seg_hist,
            torch.stack([*texture, edges, corr], dim=1),
        ]
        return torch.cat(columns, dim=1).reshape(n, -1)
