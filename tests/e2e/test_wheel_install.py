"""The core install, as a user gets it: build a wheel, install it (not editable) into a fresh virtual
environment with only the core dependencies, and run every command from a folder outside the source
tree. The shipped model and demo images must come from the installed package; the optional extras
(matplotlib, psutil, torch, OpenCV) are absent and reported as such, never as a traceback.

Slow (about 1-2 minutes: pip resolves the core dependencies, mostly from its cache); CI runs it.
"""

from __future__ import annotations

import ast
import os
import platform
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest
from paths import REPO

SOURCE_IGNORE = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", "runs", "*.h5")

pytestmark = pytest.mark.slow


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: int = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel_and_install(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, str]]:
    """(the built wheel, bin folder of a fresh venv with it installed, environment without this venv's paths)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"  # a copy, so that building leaves nothing in the checkout
    shutil.copytree(REPO, source, ignore=SOURCE_IGNORE)
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    dist = tmp / "dist"
    built = run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(source)], tmp, env)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = dist.glob("allbatch-*.whl")
    fresh = tmp / "venv"
    venv.EnvBuilder(with_pip=True).create(fresh)
    bin_dir = fresh / "bin"
    done = run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel)], tmp, env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return wheel, bin_dir, env


@pytest.fixture(scope="module")
def installed(wheel_and_install: tuple[Path, Path, dict[str, str]]) -> tuple[Path, dict[str, str]]:
    """(bin folder of a fresh venv with the wheel installed, environment without this venv's paths)."""
    _, bin_dir, env = wheel_and_install
    return bin_dir, env


def test_the_wheel_holds_the_product_not_the_factory(wheel_and_install: tuple[Path, Path, dict[str, str]]) -> None:
    """Training, QC fitting, calibration, robustness and quantisation stay beside the package (``factory/``)."""
    wheel = wheel_and_install[0]
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert any(name.startswith("allbatch/run/") for name in names)
    factory = [name for name in names if name.startswith("factory/") or "/training/" in name or name.endswith(("qc/fit.py", "perturb.py"))]
    assert factory == [], f"model-making code in the wheel: {factory[:5]}"


def test_core_install_runs_every_command(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    bin_dir, env = installed
    python = str(bin_dir / "python")
    code = "import allbatch, importlib.util as u; print(allbatch.__file__); print([m for m in EXTRAS if u.find_spec(m)])"
    # OpenVINO and OpenCV are core dependencies on x86-64 (the fast CPU path), extras elsewhere
    optional = ("matplotlib", "psutil", "torch") + (() if platform.machine() in ("x86_64", "AMD64") else ("cv2", "openvino"))
    probe = run([python, "-c", code.replace("EXTRAS", repr(optional))], tmp_path, env)
    where, extras = probe.stdout.splitlines()
    assert Path(where).is_relative_to(bin_dir.parent), "allbatch must come from the fresh venv, not the source tree"
    assert extras == "[]", f"the core install must not have the optional extras: {extras}"

    allbatch = str(bin_dir / "allbatch")
    images = tmp_path / "slides"
    shutil.copytree(Path(where).parent / "demo", images)
    commands = {
        "run --demo": [allbatch, "run", "--demo", "--out", "demo.h5", "--quiet"],
        "run": [allbatch, "run", str(images), "--out", "slides.h5", "--batch-size", "4"],
        "eval": [allbatch, "eval", "slides.h5"],
        "export": [allbatch, "export", "slides.h5", "--csv", "slides.csv"],
        "info": [allbatch, "info"],
        "report": [allbatch, "report", "slides.h5", "-o", "slides.html"],
        "run --shard 0/2": [allbatch, "run", str(images), "--out", "part0.h5", "--shard", "0/2", "--quiet"],
        "run --shard 1/2": [allbatch, "run", str(images), "--out", "part1.h5", "--shard", "1/2", "--quiet"],
        "merge": [allbatch, "merge", "part0.h5", "part1.h5", "--out", "merged.h5"],
        "engine --help": [allbatch, "engine", "build", "--help"],
        "bench": [
            allbatch,
            "bench",
            str(images),
            "--limit",
            "4",
            "--batch-sizes",
            "4",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--json",
            "bench.json",
            "--quiet",
        ],
        "--version": [allbatch, "--version"],
    }
    for name, command in commands.items():
        result = run(command, tmp_path, env)
        assert result.returncode == 0, f"{name}: exit {result.returncode}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, f"{name}:\n{result.stderr[-3000:]}"
        if name == "eval":
            assert "accuracy" in result.stdout and "matplotlib is not installed" in result.stderr
    assert (tmp_path / "demo.h5").is_file() and (tmp_path / "bench.json").is_file() and (tmp_path / "merged.h5").is_file()
    assert "Per folder" in (tmp_path / "slides.html").read_text(encoding="utf-8")
    assert len((tmp_path / "slides.csv").read_text().splitlines()) == 1 + 8


def test_the_readme_runs_after_its_own_install(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    """Every shell line of the README, literally, in a folder whose `.venv` is the fresh core install (what
    `python3 -m venv .venv && .venv/bin/pip install .` makes; `bash scripts/test.sh` is what CI itself runs), on
    `my_slides/` made of the demo images in patient folders; then the README's Python snippet with that venv's
    Python (core dependencies only: no pandas). Then the exit-code story it tells: a damaged upload makes the
    script's run exit 3, the next `--resume` exits 0 and makes the report."""
    from readme_support import INSTALL_LINE, TEST_COMMAND, shell_lines, snippet

    bin_dir, env = installed
    (tmp_path / ".venv").symlink_to(bin_dir.parent)
    demo = next(Path(p) for p in (bin_dir.parent / "lib").glob("python*/site-packages/allbatch/demo"))
    for index, image in enumerate(sorted(demo.glob("*/*.jpg"))):
        patient = tmp_path / "my_slides" / f"P0{index % 2 + 1}"
        patient.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, patient / f"{image.parent.name}-{image.name}")

    def bash(line: str) -> subprocess.CompletedProcess[str]:
        return run(["bash", "-c", line], tmp_path, env, timeout=600)

    lines = shell_lines()
    for line in lines:
        if line == TEST_COMMAND:
            continue
        if INSTALL_LINE.match(line):  # the install is the fixture's; what follows it runs as written
            line = line.split(" && ", 2)[2] if line.count(" && ") >= 2 else ""
        if line:
            result = bash(line)
            assert result.returncode == 0, f"{line}: exit {result.returncode}\n{result.stderr[-3000:]}"
            assert "Traceback" not in result.stderr, f"{line}:\n{result.stderr[-3000:]}"
    page = (tmp_path / "my_slides.html").read_text(encoding="utf-8")
    assert "Per folder" in page and "verdict" in page and (tmp_path / "demo.h5").is_file()  # the report with its folder table

    shown = run([str(bin_dir / "python"), "-c", snippet()], tmp_path, env)
    assert shown.returncode == 0, shown.stderr[-3000:]
    counts = ast.literal_eval(shown.stdout.strip())  # the snippet prints {class: count}
    assert sum(counts.values()) == 8 and set(counts) <= {"Benign", "Early", "Pre", "Pro"}

    (script,) = [line for line in lines if "--resume &&" in line]
    (tmp_path / "my_slides" / "P02" / "upload.jpg").write_bytes(b"\xff\xd8\xff\xe0 half a JPEG")
    (tmp_path / "my_slides.html").unlink()
    first = bash(script)
    assert first.returncode == 3 and not (tmp_path / "my_slides.html").exists(), first.stderr[-3000:]
    second = bash(script)
    assert second.returncode == 0 and (tmp_path / "my_slides.html").is_file(), second.stderr[-3000:]
    assert "upload.jpg" in second.stderr  # the earlier failure stays reported
