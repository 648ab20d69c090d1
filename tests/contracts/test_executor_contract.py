"""The executor contract: one configuration (precision included) run in one process, by local worker processes
and by Ray gives the same rows, the same root attributes (apart from when and how it ran), the same folder
table and the same summary. The run plan and the tally are written once (``allbatch.run.plan``,
``allbatch.run.tally``); this test is what keeps the executors from drifting apart again."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
from image_factory import write_bad_files, write_good_images
from rows_support import assert_same_rows

from allbatch.results.schema import read_root_attrs
from allbatch.run.config import RunConfig
from allbatch.run.engine import run
from allbatch.run.local import cpu_slots, run_local
from allbatch.run.tally import RunSummary
from allbatch.summarize.groups_h5 import read_groups

ray = pytest.importorskip("ray", reason="the Ray executor needs the ray extra (pip install -e '.[ray]')")
pytest.importorskip("ray.data", reason="the Ray executor needs Ray Data (pip install -e '.[ray]')")

from allbatch.run.ray_data import run_ray  # noqa: E402 - after the skip

pytestmark = [pytest.mark.ray, pytest.mark.slow]

HOW_IT_RAN = {"run_started_utc", "created_utc", "updated_utc", "run_history", "executor", "device", "backend_details", "merged_from"}
"""Root attributes that say when and by which executor a run happened (timestamps, process layout), not what it found."""
SUMMARY_HOW_IT_RAN = {"output", "seconds", "images_per_second", "device", "startup_seconds"}


@pytest.fixture(scope="module")
def local_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def _attrs(path: Path) -> dict[str, Any]:
    with h5py.File(path, "r") as f:
        attrs = read_root_attrs(f)
    return {key: value for key, value in attrs.items() if key not in HOW_IT_RAN}


def _summary(summary: RunSummary) -> dict[str, Any]:
    values = summary.to_dict()
    values["failed_examples"] = sorted(map(tuple, values["failed_examples"]))  # Ray returns rows out of order
    return {key: value for key, value in values.items() if key not in SUMMARY_HOW_IT_RAN}


def _groups(path: Path) -> str:
    groups = read_groups(path)
    assert groups is not None, f"{path} has no folder table"
    return json.dumps(
        {k: np.asarray(v).tolist() if not isinstance(v, dict) else {a: str(b) for a, b in v.items()} for k, v in groups.items()}
    )


def test_one_configuration_gives_the_same_results_on_every_executor(tmp_path: Path, tiny_model: Path, local_cluster: None) -> None:
    root = tmp_path / "slides"
    write_bad_files(root / "P01")
    write_good_images(root / "P01", 5)
    write_good_images(root / "P02", 11)
    config = RunConfig(
        root, tmp_path / "one.h5", tiny_model, "onnxruntime", "cpu", precision="fp32", batch_size=4, argv=["allbatch", "run", "contract"]
    )
    outputs = {"one process": config.output, "local workers": tmp_path / "workers.h5", "ray": tmp_path / "ray.h5"}
    summaries = {
        "one process": run(config),
        "local workers": run_local(dataclasses.replace(config, output=outputs["local workers"]), cpu_slots(2)),
        "ray": run_ray(dataclasses.replace(config, output=outputs["ray"]), actors=2),
    }
    reference = outputs["one process"]
    one = summaries["one process"]
    assert (
        one.failed and sum(one.class_counts.values()) + one.not_a_smear == one.ok == one.discovered - one.failed
    )  # every ok image counted once
    assert summaries["one process"].groups is not None
    for name, output in outputs.items():
        assert_same_rows(output, reference, by_index=True, float_atol=1e-6), name  # batches are cut differently
        assert _attrs(output) == _attrs(reference), name
        assert _groups(output) == _groups(reference), name
        assert _summary(summaries[name]) == _summary(summaries["one process"]), name
        assert (
            summaries[name].groups is not None
            and summaries[name].groups.verdict_counts() == summaries["one process"].groups.verdict_counts()
        )
