"""What one benchmark measurement needs: a JSON-serialisable spec handed to a fresh worker process."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

Task = Literal["stages", "infer_only", "end_to_end", "baseline"]
TASKS: tuple[Task, ...] = ("stages", "infer_only", "end_to_end", "baseline")
STAGES: tuple[str, ...] = ("read", "decode", "segment", "assemble", "infer", "write")
"""The serial stage breakdown, in data-flow order."""


@dataclass(frozen=True)
class MeasureSpec:
    """One measurement.

    ``images``: the folder of benchmark images (a flat copy of the selected subset; every task reads
    the same files). ``backend``/``decoder`` are resolved names ("onnxruntime", "cpu", ...), never
    "auto". ``device`` is where the naive baseline runs ("cpu" or "cuda"). ``workdir`` receives the
    temporary results files. ``warmup`` untimed passes precede ``repeats`` timed ones.
    """

    task: Task
    images: str
    model: str
    backend: str
    decoder: str
    precision: str
    batch_size: int
    repeats: int
    warmup: int
    decode_threads: int
    device: str
    workdir: str

    @property
    def on_gpu(self) -> bool:
        """True when any stage of this measurement runs on a CUDA device."""
        return self.backend != "onnxruntime" or self.decoder == "dali" or self.device.startswith("cuda")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> MeasureSpec:
        return cls(**json.loads(text))

    def save(self, path: Path) -> None:
        path.write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> MeasureSpec:
        return cls.from_json(path.read_text(encoding="utf-8"))


def warmup_count(n_images: int, batch_size: int) -> int:
    """Images in one warm-up pass: two batches (first call, allocator growth, a second shape-stable call)."""
    return min(n_images, 2 * batch_size)


def as_jsonable(value: Any) -> Any:
    """Paths become strings; everything else is returned as is."""
    return str(value) if isinstance(value, Path) else value
