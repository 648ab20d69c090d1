#!/usr/bin/env bash
# Regenerate docs/report.png (the README's picture of `allbatch report`): the demo images plus three foreign
# inputs (a photograph, a blurred smear, a 32 x 32 crop) so that quality flags show, rendered by headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r allbatch/demo "$work/slide"
rm -f "$work/slide/CITATION.md"
mkdir -p "$work/slide/odd"
"$PY" - "$work/slide/odd" <<'PYEOF'
import sys
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image
from scipy import ndimage

out = Path(sys.argv[1])
Image.fromarray(skimage.data.coffee()).save(out / "coffee.jpg", quality=90)
smear = np.asarray(Image.open(next(Path("allbatch/demo/Pre").glob("*.jpg"))).convert("RGB"))
blurred = ndimage.gaussian_filter(smear.astype(np.float32), sigma=(3, 3, 0)).clip(0, 255).astype(np.uint8)
Image.fromarray(blurred).save(out / "blurred.jpg", quality=90)
Image.fromarray(np.ascontiguousarray(smear[40:72, 60:92])).save(out / "crop32.png")
PYEOF
"$PY" -m allbatch run "$work/slide" --out "$work/r.h5" --backend onnxruntime --decoder cpu --quiet || [ $? -eq 3 ]
"$PY" -m allbatch report "$work/r.h5" -o "$work/report.html"
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,1500 --screenshot="$work/full.png" "file://$work/report.html" >/dev/null 2>&1
mkdir -p docs
"$PY" -c "
from PIL import Image
image = Image.open('$work/full.png').convert('RGB')
image.thumbnail((880, 1200))
image.quantize(colors=128).save('docs/report.png', optimize=True)
"
ls -l docs/report.png
