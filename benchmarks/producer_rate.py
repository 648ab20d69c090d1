"""Producer-only benchmark: read, check, decode, segment, assemble and take the input QC measures of N images,
with no inference (the run's producer, ``allbatch.run.engine._Producer.prepared``), per decoder, thread count
and DALI prefetch depth. Shows how the preparing side scales with cores: on a GPU machine it must outrun the
network (issue 22).

    python benchmarks/producer_rate.py [SRC] --images 512 --batch 64 --threads 1,2 --decoders dali-cpu,cpu \
        --prefetch 1,2 --json OUT.json

Each configuration runs once untimed (warm-up: the DALI pipeline is built then, and start-up is not timed),
then ``--repeats`` timed passes; the JSON is rewritten after every measurement, so an interrupted run keeps
what it measured. Figures name the CPU (``environment.cpu``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from allbatch.bench.runner import default_source, select_images, stage_images  # noqa: E402
from allbatch.bench.timing import summarise  # noqa: E402
from allbatch.environment.machine import collect_environment  # noqa: E402
from allbatch.input.discover import discover  # noqa: E402
from allbatch.model.manifest import load_model_artifact  # noqa: E402
from allbatch.qc.stage import QcStage  # noqa: E402
from allbatch.run.config import GpuTuning, RunConfig  # noqa: E402
from allbatch.run.engine import _Producer  # noqa: E402 - the run's own producer, measured as it runs
from allbatch.run.plan import make_preparer  # noqa: E402
from allbatch.run.tally import Tally  # noqa: E402


def produce(folder: Path, decoder: str, threads: int, prefetch: int, batch: int, model: Path | None) -> tuple[int, float]:
    """Prepare every image under ``folder`` as a run's producer does; (images prepared ok, seconds)."""
    artifact = load_model_artifact(model)
    config = RunConfig(source=folder, output=folder / "unused.h5", model=model, decoder=decoder, batch_size=batch,
                       decode_threads=threads, tuning=GpuTuning(prefetch_depth=prefetch))  # fmt: skip
    files = discover(folder)
    preparer = make_preparer(decoder, artifact, config)  # builds (or borrows) the warmed DALI pipeline: not timed
    qc = QcStage(artifact.manifest)
    producer = _Producer(files, {}, preparer, batch, Tally(len(files)), measure_inputs=qc.measure_inputs, run_ahead=True)
    try:
        began = time.perf_counter()
        ok = sum(len(work.batch.ok_positions) for work in producer.prepared())
        return ok, time.perf_counter() - began
    finally:
        preparer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", type=Path, nargs="?", default=None)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--decoders", default="dali-cpu,cpu")
    parser.add_argument("--prefetch", default="1,2", help="DALI prefetch depths (ignored by the cpu decoder)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    source = args.src or default_source()
    doc: dict[str, Any] = {
        "what": "producer only: read, check, decode, segment, assemble, input QC measures; no inference",
        "environment": collect_environment(["python", "benchmarks/producer_rate.py", *(argv or sys.argv[1:])]),
        "source": str(source),
        "images": args.images,
        "batch": args.batch,
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="allbatch-producer-") as tmp:
        folder = Path(tmp) / "images"
        stage_images(select_images(discover(source), args.images), folder)
        for decoder in args.decoders.split(","):
            depths = [int(d) for d in args.prefetch.split(",")] if decoder.startswith("dali") else [1]
            for threads in (int(t) for t in args.threads.split(",")):
                for depth in depths:
                    produce(folder, decoder, threads, depth, args.batch, args.model)  # warm-up
                    runs = [produce(folder, decoder, threads, depth, args.batch, args.model) for _ in range(args.repeats)]
                    rates = [ok / seconds for ok, seconds in runs]
                    entry = {"decoder": decoder, "threads": threads, "prefetch_depth": depth, "images_ok": runs[0][0],
                             "images_per_s": summarise(rates)}  # fmt: skip
                    doc["results"].append(entry)
                    print(f"{decoder:9s} threads {threads:2d} prefetch {depth}: {summarise(rates)['median']:8.1f} images/s", flush=True)
                    args.json.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
