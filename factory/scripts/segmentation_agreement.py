"""Print the IoU of allbatch's masks against the authors' Segmented/ images, per class.

Usage: python -m factory.scripts.segmentation_agreement [DATASET_ROOT]   (default ../shared/data/all-kaggle)
"""

from __future__ import annotations

import sys
from pathlib import Path

from factory.segment_agreement import agreement


def main() -> None:
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[3] / "shared" / "data" / "all-kaggle"
    per_class, overall = agreement(root)
    print(f"{'class':8} {'n':>5} {'median IoU':>11} {'p10 IoU':>8}")
    for row in [*per_class, overall]:
        print(f"{row.name:8} {row.n:5d} {row.median:11.3f} {row.p10:8.3f}")


if __name__ == "__main__":
    main()
