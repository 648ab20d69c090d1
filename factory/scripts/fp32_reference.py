"""fp32 logits of a training checkpoint on a model's validation part: the reference of the fp16-weights agreement
(``factory/scripts/validate_model.py --fp32-logits``) when the checkpoint cannot leave the machine it was trained on.

On a lent GPU the fp32 state_dict (75 MB) is larger than what a device call brings back (16 MiB a file, 64 MiB
in all), and that machine's CPUs run ONNX Runtime slowly, so the reference is computed where the checkpoint is,
in fp32 (TF32 off) on CUDA or the CPU, and only the (n, C) logits come back.

Usage: python -m factory.scripts.fp32_reference --model X.onnx --checkpoint best.pt --data DIR --out fp32_logits.npz
Output (npz): ``val_files`` (n,) str, ``logits`` (n, C) float32 at temperature 1, ``device`` str.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from allbatch.model.config import ModelConfig
from allbatch.model.manifest import load_model_artifact
from allbatch.model.network import TwoChannelNet
from allbatch.prepare.recipe import prepare_files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="the artifact whose manifest names the validation files")
    parser.add_argument("--checkpoint", type=Path, required=True, help="the fp32 state_dict the artifact was exported from")
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    manifest = load_model_artifact(args.model).manifest
    files = list(manifest.training["val_files"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False  # a reference in fp32, not TF32's 10-bit mantissa
    torch.backends.cudnn.allow_tf32 = False
    net = TwoChannelNet(ModelConfig.from_dict(manifest.architecture))
    net.load_state_dict(torch.load(args.checkpoint, map_location="cpu"))
    net = net.to(device).eval()
    inputs = prepare_files([args.data / rel for rel in files], manifest.prep, manifest.seg)
    with torch.no_grad():
        batches = (torch.from_numpy(inputs[i : i + 64]).to(device) for i in range(0, len(inputs), 64))
        logits = np.concatenate([net(batch).float().cpu().numpy() for batch in batches])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.out, val_files=np.array(files), logits=logits.astype(np.float32), device=np.array(str(device)))
    print(f"fp32 logits of {len(files)} validation images on {device} -> {args.out}")


if __name__ == "__main__":
    main()
