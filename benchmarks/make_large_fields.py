"""Make synthetic large field images for the input-size benchmark: 4x4 mosaics of development images.

Each output is a WIDTHxHEIGHT JPEG (default 2048x1536, like a microscope camera field) built from
16 source images (224x224 smear crops) resized to one mosaic cell each, picked with a seeded RNG.
The folder is written outside the repository (default /tmp/allbatch-large) and never committed.

Usage: python benchmarks/make_large_fields.py [--src DIR] [--out DIR] [--count 48] [--size 2048x1536]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DATASET_ORIGINAL = REPO.parent / "shared" / "data" / "all-kaggle" / "Original"
DEMO = REPO / "allbatch" / "demo"


def source_images(src: Path) -> list[Path]:
    """Every JPEG under ``src``, sorted."""
    return sorted(path for path in src.rglob("*") if path.suffix.lower() in (".jpg", ".jpeg"))


def mosaic(tiles: list[Path], size: tuple[int, int], grid: int) -> Image.Image:
    """``grid`` x ``grid`` tiles, each resized (bicubic) to one cell, into one RGB image of ``size`` (W, H)."""
    width, height = size
    cell_w, cell_h = width // grid, height // grid
    canvas = Image.new("RGB", (cell_w * grid, cell_h * grid))
    for index, path in enumerate(tiles):
        with Image.open(path) as tile:
            cell = tile.convert("RGB").resize((cell_w, cell_h), Image.Resampling.BICUBIC)
        canvas.paste(cell, ((index % grid) * cell_w, (index // grid) * cell_h))
    return canvas


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DATASET_ORIGINAL if DATASET_ORIGINAL.is_dir() else DEMO)
    parser.add_argument("--out", type=Path, default=Path("/tmp/allbatch-large"))
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--size", default="2048x1536", help="WIDTHxHEIGHT")
    parser.add_argument("--grid", type=int, default=4)
    parser.add_argument("--quality", type=int, default=90)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    out = args.out.resolve()
    if out.is_relative_to(REPO):
        parser.error(f"--out {out} is inside the repository; large benchmark images must not be committed")
    sources = source_images(args.src)
    if not sources:
        parser.error(f"no JPEGs under {args.src}")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    tiles_per_image = args.grid * args.grid
    for index in range(args.count):
        picks = rng.choice(len(sources), size=tiles_per_image, replace=len(sources) < tiles_per_image)
        image = mosaic([sources[i] for i in picks], (width, height), args.grid)
        image.save(out / f"field-{index:04d}.jpg", quality=args.quality)
    print(f"wrote {args.count} images of {width}x{height} to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
