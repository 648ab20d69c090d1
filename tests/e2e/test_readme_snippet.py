"""The README is what a lab reads, so it is tested like code:

- its Python snippet runs as written on a real results.h5 (with a superseded row, a failed image and a stale
  duplicate that a killed run leaves), gives one live row per file, and imports only what the core install has;
- every `allbatch ...` command it shows names only options that command's --help lists;
- every shell line is an install line, the test command, or an `allbatch` command (run after a real install in
  tests/e2e/test_wheel_install.py);
- its accuracy figures are those of the manifest part it names, with their 95 % (Wilson) interval;
- it stays short (<= 15 kB), says "research use only, not a diagnostic device" on its first screen, and its
  links to docs/ resolve.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from paths import REPO
from readme_support import INSTALL_LINE, README, TEST_COMMAND, allbatch_commands, readme, shell_lines, snippet
from typer.testing import CliRunner

from allbatch.cli import app as cli_app
from allbatch.core.status import ImageStatus
from allbatch.results.rows import ResultRows
from allbatch.results.writer import ResultsWriter

MAX_README_BYTES = 15_000
FIRST_SCREEN_LINES = 30


@cache
def help_options(command: str) -> frozenset[str]:
    cli_app._register()
    result = CliRunner().invoke(cli_app.app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    return frozenset(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*|-[a-z])\b", result.output))


def _rows(spec: list[tuple[str, int, int]]) -> ResultRows:
    """(path, status, label) -> rows; probs one-hot-ish on the label, NaN when failed."""
    n = len(spec)
    probs = np.full((n, 4), np.nan, dtype=np.float32)
    for i, (_, status, label) in enumerate(spec):
        if status == ImageStatus.OK:
            probs[i] = 0.1
            probs[i, label] = 0.7
    return ResultRows(
        paths=[p for p, _, _ in spec],
        sha256=[hashlib.sha256(f"{p}{i}".encode()).hexdigest() for i, (p, _, _) in enumerate(spec)],
        status=np.array([s for _, s, _ in spec], dtype=np.int8),
        errors=["" if s == ImageStatus.OK else "cannot identify image file" for _, s, _ in spec],
        probs=probs,
        labels=np.array([label for _, _, label in spec], dtype=np.int8),
        mask_fraction=np.full(n, 0.2, dtype=np.float32),
    )


def test_the_load_snippet_runs_and_keeps_one_live_row_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (name,) = re.findall(r'h5py\.File\("([^"]+)"', snippet())
    path = tmp_path / name
    writer = ResultsWriter.open(path, mode="new", provenance={}, compat={}, expected_rows=8)
    writer.append(_rows([("P01/ü a.jpg", 0, 0), ("P01/b.jpg", 0, 1), ("P02/bad.jpg", int(ImageStatus.DECODE_ERROR), -1)]))
    writer.supersede([1])  # b.jpg changed ...
    writer.append(_rows([("P01/b.jpg", 0, 2), ("P02/c.jpg", 0, 2)]))  # ... and was redone
    writer.append(_rows([("P02/c.jpg", 0, 3)]))  # a stale duplicate, as a killed run leaves: the later row counts
    writer.close(compact=False)

    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(snippet(), "README.md", "exec"), namespace)
    assert namespace["predicted"] == {"P01/ü a.jpg": "Benign", "P02/bad.jpg": "failed", "P01/b.jpg": "Pre", "P02/c.jpg": "Pro"}
    assert all(type(key) is str for key in namespace["predicted"])  # type: ignore[attr-defined]


def test_the_snippet_needs_only_the_core_install() -> None:
    """What `pip install .` installs: the project's dependencies (by import name), nothing from an extra."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {re.split(r"[<>=!~ \[]", requirement)[0].lower() for requirement in project["dependencies"]}
    imports = set(re.findall(r"^\s*(?:import|from) (\w+)", snippet(), flags=re.M))
    assert imports and imports <= core, f"the snippet imports {imports - core}, which `pip install .` does not install"


def test_every_option_the_readme_names_exists() -> None:
    commands = allbatch_commands()
    assert len(commands) >= 10  # the quick start, the table, the script example
    names = {argv[0] for argv in commands}
    assert {"run", "report", "export", "eval", "info", "bench", "merge"} <= names
    for argv in commands:
        command = argv[0]
        options = {word.split("=")[0] for word in argv[1:] if re.fullmatch(r"--?[a-z][\w-]*(=.*)?", word)}
        missing = options - help_options(command)
        assert not missing, f"`allbatch {' '.join(argv)}`: {sorted(missing)} not in `allbatch {command} --help`"
    # inline mentions such as `--resume` or `--class-map FOLDER=Class` exist on some command
    every = set().union(*(help_options(name) for name in names))
    mentioned = set(re.findall(r"`(--[a-z][a-z0-9-]*)", readme()))
    assert mentioned and mentioned <= every, sorted(mentioned - every)


def test_every_shell_line_is_an_install_the_test_command_or_allbatch() -> None:
    """So the wheel-install test, which runs every `allbatch` line after a real install, covers them all."""
    lines = shell_lines()
    assert TEST_COMMAND in lines, "the README must keep the command that sets up and passes the tests"
    assert any(INSTALL_LINE.match(line) and "allbatch run --demo" in line for line in lines), "the one-command demo run"
    for line in lines:
        ok = (
            line == TEST_COMMAND
            or INSTALL_LINE.match(line)
            or all(part.strip().startswith(".venv/bin/allbatch ") for part in line.split("&&"))
        )
        assert ok, f"a README command no test runs: {line}"


def _clopper_pearson(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The exact two-sided binomial interval (the manifest's ``interval_method``)."""
    from scipy.stats import beta

    tail = (1 - level) / 2
    low = 0.0 if successes == 0 else float(beta.ppf(tail, successes, n - successes + 1))
    high = 1.0 if successes == n else float(beta.ppf(1 - tail, successes + 1, n - successes))
    return low, high


def test_the_accuracy_figures_are_the_manifests_with_their_interval() -> None:
    """The README names the manifest part its figures come from; they must be that part's, rounded as printed."""
    (source,) = re.findall(r"<!-- accuracy-source: ([\w.]+) -->", readme())
    assert f"`{source}`" in readme()  # named in the text, not only in the comment
    manifest = json.loads((REPO / "allbatch" / "engines" / "allbatch-densenet201.json").read_text(encoding="utf-8"))
    part = manifest
    for key in source.split("."):
        part = part[key]
    confusion = np.array(part["confusion"])  # rows: true Benign, Early, Pre, Pro; columns: predicted
    figures = {
        "all four classes right": (int(np.trace(confusion)), int(confusion.sum())),
        "ALL called ALL": (int(confusion[1:, 1:].sum()), int(confusion[1:].sum())),
        "Benign called Benign": (int(confusion[0, 0]), int(confusion[0].sum())),
    }
    for name, (k, n) in figures.items():
        low, high = _clopper_pearson(k, n)
        line = f"- {name}: **{100 * k / n:.1f} %** ({k} of {n}; 95 % interval {100 * low:.1f}-{100 * high:.1f} %)"
        assert line in readme(), f"expected in the README: {line}"
    assert f"{int(confusion.sum())} images" in readme()


def test_the_readme_is_short_safe_and_links_resolve() -> None:
    assert README.stat().st_size <= MAX_README_BYTES
    first_screen = "\n".join(readme().splitlines()[:FIRST_SCREEN_LINES])
    assert "Research use only" in first_screen and "not a diagnostic device" in first_screen
    assert "## Quick start" in first_screen
    sections = re.findall(r"^## (.+)$", readme(), flags=re.M)
    assert sections[:5] == ["Quick start: your own slides", "Install", "Commands", "Results", "Accuracy"]
    links = re.findall(r"\]\((docs/[^)#]+)\)", readme())
    assert {"docs/model.md", "docs/quality-control.md", "docs/results-format.md", "docs/benchmarks.md", "docs/gpu.md"} <= set(links)
    for link in links:
        assert (REPO / link).is_file(), link
