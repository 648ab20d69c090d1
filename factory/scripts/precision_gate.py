"""Judge OpenVINO bf16 by what users receive, on the selection part, and store the verdict (issue 25, point 4).

Reads the cached selection outputs in fp32 and bf16 (``factory/scripts/cache_part_outputs.py``, same CPU), computes
the QC flags of each with the runtime's ``QcStage`` and the folder verdicts (blocks of 25 image numbers, and class
folders), and applies ``factory.precision_gate.judge``. ``--write`` stores the verdict as
``validation.openvino_bf16``, which ``--backend auto`` follows (``allbatch.backends.openvino_backend``).

Usage: python -m factory.scripts.precision_gate [--model ...] [--cache /tmp/model-test-cache] [--write]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from allbatch.environment.cpu_features import cpu_features
from allbatch.model.manifest import benign_errors_of, load_model_artifact, manifest_path_for
from allbatch.summarize.groups import VerdictRule
from factory.part_outputs import PartOutputs
from factory.precision_gate import gate_figures, qc_flags, verdict_record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/model-test-cache"))
    parser.add_argument("--write", action="store_true", help="store the verdict as validation.openvino_bf16")
    args = parser.parse_args()
    artifact = load_model_artifact(args.model)
    manifest = artifact.manifest
    fp32 = PartOutputs.load(args.cache / "selection-plain-fp32.npz")
    bf16 = PartOutputs.load(args.cache / "selection-plain-bf16.npz")
    if fp32.names != bf16.names:
        raise SystemExit("the fp32 and bf16 caches hold different images")
    flags32 = qc_flags(fp32, fp32.logits, fp32.features, manifest)
    flags16 = qc_flags(fp32, bf16.logits, bf16.features, manifest)  # the same inputs: only the model outputs differ
    blocks = [f"{Path(name).parts[0]}/block-{int(block):03d}" for name, block in zip(fp32.names, fp32.blocks[:, 1], strict=True)]
    classes = [Path(name).parts[0] for name in fp32.names]
    rule = VerdictRule(benign_errors=benign_errors_of(manifest.validation))  # the folder rule a run applies with this model
    figures = gate_figures(fp32.labels, fp32.probs, bf16.probs, flags32, flags16, [blocks, classes], rule)
    figures["folder_schemes"] = "blocks of 25 image numbers per class, and the 4 class folders"
    figures["folder_rule"] = rule.describe()
    cpu = cpu_features()
    record = verdict_record(figures, f"cpu ({cpu.model}; {cpu.isa_summary()})")
    record["model_sha256"] = artifact.sha256
    record["command"] = "python -m factory.scripts.cache_part_outputs && python -m factory.scripts.precision_gate --write"
    print(json.dumps(record, indent=1))
    if args.write:
        manifest.validation = {**manifest.validation, "openvino_bf16": record}
        manifest_path_for(artifact.onnx_path).write_text(manifest.to_json() + "\n")
        print("written to", manifest_path_for(artifact.onnx_path))


if __name__ == "__main__":
    main()
