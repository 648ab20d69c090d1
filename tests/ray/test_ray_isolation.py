"""``--executor ray`` never imports Python code from the directory it was started in (issue 24, point 8).

Ray puts the driver's working directory on every worker's ``sys.path`` unless the job has a ``working_dir``
(``allbatch.run.ray_data.isolated_working_dir``). Here the run starts from inside the input folder, which holds
a ``simplejpeg.py`` (a module the workers import to check JPEGs) and a package named ``allbatch``; each
leaves a marker file when imported. ``run_ray`` starts its own local cluster: no other Ray test's cluster
may be running (``ray.init`` reads the working directory when it starts the job)."""

from __future__ import annotations

from pathlib import Path

import pytest
from image_factory import write_good_images

from allbatch.run.config import RunConfig

ray = pytest.importorskip("ray", reason="the Ray executor needs the ray extra (pip install -e '.[ray]')")
pytest.importorskip("ray.data", reason="the Ray executor needs Ray Data (pip install -e '.[ray]')")

from allbatch.run.ray_data import run_ray  # noqa: E402 - after the skip

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _plant(module: Path, marker: Path, *, fail: bool) -> None:
    module.parent.mkdir(parents=True, exist_ok=True)
    code = f"from pathlib import Path\nPath({str(marker)!r}).write_text('imported')\n"
    module.write_text(code + ("raise ImportError('planted module imported')\n" if fail else ""))


def test_ray_workers_import_nothing_from_the_working_directory(tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert not ray.is_initialized()
    root = tmp_path / "slides"
    write_good_images(root / "slide1", 6)
    markers = tmp_path / "markers"
    markers.mkdir()
    _plant(root / "simplejpeg.py", markers / "simplejpeg", fail=False)
    _plant(root / "allbatch" / "__init__.py", markers / "allbatch", fail=True)
    monkeypatch.chdir(root)  # started from inside the input folder, as `cd slides && allbatch run . --executor ray`
    out = tmp_path / "r.h5"
    summary = run_ray(RunConfig(Path("."), out, tiny_model, "onnxruntime", "cpu", batch_size=4), actors=1)
    assert (summary.discovered, summary.processed, summary.failed) == (6, 6, 0)
    assert sorted(p.name for p in markers.iterdir()) == []  # neither planted module ran anywhere
    assert not ray.is_initialized()
