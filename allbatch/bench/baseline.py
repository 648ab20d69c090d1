"""The naive baseline: the per-image pipeline of the peer notebooks, on the same images and weights.

For every image, one at a time: Pillow load, OpenCV HSV segmentation as the dataset's authors wrote it
(``cv2.cvtColor(bgr, COLOR_RGB2HSV)`` + ``cv2.inRange`` + ``cv2.bitwise_and``), Pillow resize, NumPy
normalisation, one eager PyTorch fp32 forward of ``TwoChannelNet`` (weights read from the same ONNX
with ``state_dict_from_onnx``) on the device of the backend under test, and one HDF5 write of that row
(open the dataset, grow it by one, write, flush). Nothing is batched, overlapped or kept resident
between images except the network itself.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from allbatch import CLASS_NAMES
from allbatch.bench.timing import device_synchronizer
from allbatch.core.errors import UserInputError
from allbatch.input.discover import discover
from allbatch.model.manifest import ModelArtifact
from allbatch.prepare.preprocessing import Preprocessing
from allbatch.prepare.segment import SegmentationParams

log = logging.getLogger("allbatch.bench")


BASELINE_MODULES = {"torch": "torch (pip install 'allbatch[train]')", "cv2": "opencv-python-headless"}
"""What the baseline imports beyond the core install, with what to install."""


def baseline_unavailable_reason() -> str | None:
    """None when the baseline can run here; otherwise which of its packages are missing (core installs)."""
    import importlib.util

    missing = [hint for module, hint in BASELINE_MODULES.items() if importlib.util.find_spec(module) is None]
    return f"it needs {' and '.join(missing)}" if missing else None


def _load_pair(path: Path, prep: Preprocessing, seg: SegmentationParams) -> npt.NDArray[np.float32]:
    """One image -> (2, 3, S, S) float32, the notebook way: PIL, then OpenCV HSV on BGR data."""
    import cv2
    from PIL import Image

    rgb = np.array(Image.open(path).convert("RGB"))
    rows = prep.blank_rows(rgb.shape[0])
    if rows:
        rgb[rgb.shape[0] - rows :] = 0
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # what the authors' cv2.imread returned
    hsv = cv2.cvtColor(bgr, cv2.COLOR_RGB2HSV)  # their constant, applied to BGR data
    mask = cv2.inRange(hsv, (seg.h_min, seg.s_min, seg.v_min), (seg.h_max, seg.s_max, seg.v_max))
    segmented = cv2.bitwise_and(hsv, hsv, mask=mask)[:, :, ::-1]  # stored via imwrite, read back as RGB: (V, S, H)
    size = (prep.size, prep.size)
    original = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    masked = np.asarray(Image.fromarray(np.ascontiguousarray(segmented)).resize(size, Image.Resampling.BILINEAR), dtype=np.float32)
    pair = (np.stack([original, masked]) / 255.0 - prep.mean) / prep.std
    return pair.transpose(0, 3, 1, 2).astype(np.float32)


def naive_classify(
    paths: list[Path], net: Any, device: str, prep: Preprocessing, seg: SegmentationParams, output: Path
) -> list[list[float]]:
    """Classify ``paths`` one by one into ``output`` (HDF5, one write and flush per row).

    Returns the (len(paths), 4) probabilities as nested lists (host).
    """
    import h5py
    import torch

    probs_out: list[list[float]] = []
    with h5py.File(output, "w") as handle:
        handle.create_dataset("probs", shape=(0, len(CLASS_NAMES)), maxshape=(None, len(CLASS_NAMES)), dtype="f4")
        handle.create_dataset("path", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype())
        for row, path in enumerate(paths):
            x = torch.from_numpy(_load_pair(path, prep, seg)).unsqueeze(0).to(device)
            with torch.no_grad():
                probs = torch.softmax(net(x), dim=1)[0].cpu().numpy()
            for name, value in (("probs", probs), ("path", str(path.name))):
                dataset = handle[name]
                dataset.resize(row + 1, axis=0)
                dataset[row] = value
            handle.flush()
            probs_out.append([float(v) for v in probs])
    return probs_out


def measure_naive(folder: Path, artifact: ModelArtifact, device: str) -> dict[str, Any]:
    """Time ``naive_classify`` over the images in ``folder`` once (device synchronised around the clock).

    Returns {"seconds", "images", "probs" (nested lists), "device" (name), "torch_threads"}.
    """
    import torch

    from allbatch.backends.torch_backend import load_torch_model

    paths = [item.path for item in discover(folder)]
    if not paths:
        raise UserInputError(f"no images under {folder}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError("the baseline was asked to run on CUDA, but torch sees no CUDA device")
    net = load_torch_model(artifact).to(device).eval()  # float32, eager
    prep, seg = artifact.manifest.prep, artifact.manifest.seg
    sync = device_synchronizer(device.startswith("cuda"))
    with tempfile.TemporaryDirectory(prefix="allbatch-baseline-") as tmp:
        sync()
        started = time.perf_counter()
        probs = naive_classify(paths, net, device, prep, seg, Path(tmp) / "baseline.h5")
        sync()
        seconds = time.perf_counter() - started
    return {
        "images": len(paths),
        "seconds": seconds,
        "probs": probs,
        "device": device if device == "cpu" else torch.cuda.get_device_name(torch.device(device)),
        "torch_threads": torch.get_num_threads(),
    }
