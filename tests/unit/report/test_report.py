"""allbatch report as a user sees it: the HTML parsed (self-contained, numbers equal to an independent count
from results.h5 with h5py) and rendered in headless Chromium (Debian's package) to a PNG."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import h5py
import numpy as np
import pytest
from paths import REPO
from PIL import Image

from allbatch import CLASS_NAMES
from allbatch.cli import app as cli_app
from allbatch.core.status import ImageStatus
from allbatch.qc.flags import QcFlag
from allbatch.report.content import MAX_FLAGGED_THUMBS
from allbatch.report.html import write_report
from allbatch.results.rows import ResultRows
from allbatch.results.writer import ResultsWriter

DEMO = REPO / "allbatch" / "demo"
VALIDATION_CONFUSION = [[73, 2, 0, 0], [0, 148, 0, 0], [0, 0, 149, 0], [0, 0, 0, 124]]
"""The shipped model's validation confusion (rows truth): 2 of 75 Benign images called Early."""
MANIFEST = json.dumps({"validation": {"onnx_runtime": {"plain": {"confusion": VALIDATION_CONFUSION}}}})
"""The part of a model manifest the folder verdicts read, as results.h5 stores it (``model_manifest``)."""
NOT_A_SMEAR_BITS = 1 | 2 | 16
"""/qc/flags bits blurred, colour and small, written out here as the file's ``bits`` attribute numbers them."""


def expected_verdict(votes: np.ndarray) -> str:
    """The verdict rule computed independently (scipy directly): 90 % Clopper-Pearson upper bound of 2/75,
    binomial tail of the ALL votes below 1 % -> ALL, named by a subtype with >= 70 % of them."""
    from scipy.stats import beta, binom

    usable = int(votes.sum())
    if usable < 5:
        return "insufficient"
    n_all = int(votes[1:].sum())
    tail = binom.sf(n_all - 1, usable, beta.ppf(0.90, 3, 73)) if n_all else 1.0
    if tail >= 0.01:
        return "Benign"
    lead = int(votes[1:].argmax()) + 1
    return {1: "ALL (Early Pre-B)", 2: "ALL (Pre-B)", 3: "ALL (Pro-B)"}[lead] if votes[lead] / n_all >= 0.7 else "ALL, subtype mixed"


class PageParser(HTMLParser):
    """Collects every attribute that can load something, the data-value cells and the cards."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []
        self.tags: set[str] = set()
        self.values: dict[str, list[str]] = {}
        self.folders: dict[str, dict[str, str]] = {}
        self.cards: list[str] = []
        self._value_key: str | None = None
        self._folder: str | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        a = dict(attrs)
        for name in ("src", "href", "srcset", "action", "poster", "data", "xlink:href", "background"):
            if a.get(name):
                self.urls.append((tag, name, str(a[name])))
        if tag == "tr" and a.get("data-folder") is not None:
            self._folder = str(a["data-folder"])
            self.folders[self._folder] = {}
        if a.get("data-value") is not None:
            self._value_key = str(a["data-value"])
        if a.get("data-path") is not None:
            self.cards.append(str(a["data-path"]))

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._folder = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._value_key is not None and data.strip():
            if self._folder is not None:
                self.folders[self._folder][self._value_key] = data.strip()
            else:
                self.values.setdefault(self._value_key, []).append(data.strip())
            self._value_key = None


def _rows(specs: list[tuple[str, int, int, int]]) -> ResultRows:
    """(path, predicted class or -1 for a failure, status, flags) -> rows with simple probabilities."""
    n = len(specs)
    probs = np.full((n, 4), np.nan, dtype=np.float32)
    for i, (_, label, _, _) in enumerate(specs):
        if label >= 0:
            probs[i] = 0.1 / 3
            probs[i, label] = 0.9 - 0.001 * i
            probs[i] /= probs[i].sum()
    return ResultRows(
        paths=[s[0] for s in specs],
        sha256=[hashlib.sha256(s[0].encode()).hexdigest() for s in specs],
        status=np.array([s[2] for s in specs], dtype=np.int8),
        errors=["" if s[2] == ImageStatus.OK else "cannot decode: truncated" for s in specs],
        probs=probs,
        labels=np.array([s[1] for s in specs], dtype=np.int8),
        mask_fraction=np.where(np.isnan(probs[:, 0]), np.nan, 0.05).astype(np.float32),
        qc={"flags": np.array([s[3] for s in specs], dtype=np.uint16), "max_prob": np.nanmax(np.nan_to_num(probs, nan=0), axis=1)},
    )


@pytest.fixture
def results_with_images(tmp_path: Path) -> tuple[Path, Path]:
    """A results.h5 over a copy of the demo images arranged as two slides, plus generated rows:
    slide A (the 8 demo images), slide B (many flagged rows whose files do not exist), a failed file."""
    root = tmp_path / "archive"
    specs: list[tuple[str, int, int, int]] = []
    for i, path in enumerate(sorted(DEMO.glob("*/*.jpg"))):
        target = root / "Slide A" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        label = CLASS_NAMES.index(path.parent.name)
        flags = int(QcFlag.BLURRED) if i == 3 else 0
        specs.append((f"Slide A/{path.parent.name}/{path.name}", label if i != 5 else (label + 1) % 4, int(ImageStatus.OK), flags))
    for i in range(60):
        specs.append((f"Slide B/missing_{i:03d}.jpg", 2, int(ImageStatus.OK), int(QcFlag.OUTLIER | QcFlag.ENERGY) if i % 2 else 0))
    specs.append(("Slide B/broken.jpg", -1, int(ImageStatus.DECODE_ERROR), 0))
    out = tmp_path / "results.h5"
    provenance = {
        "input_root": str(root),
        "argv": ["allbatch", "run", str(root)],
        "backend": "onnxruntime",
        "device": "cpu",
        "model_manifest": MANIFEST,
    }
    with ResultsWriter.open(out, mode="new", provenance=provenance, compat={}) as writer:
        writer.append(_rows(specs))
    return out, root


def _independent_counts(path: Path) -> dict[str, object]:
    """Counts straight from the HDF5 datasets (h5py, not allbatch's reader)."""
    with h5py.File(path, "r") as f:
        n = int(f["meta/n_committed"][0])
        paths = [p.decode() for p in f["images/path"][:n]]
        status = f["images/status"][:n]
        labels = f["pred/label"][:n]
        flags = f["qc/flags"][:n]
    ok = status == 0
    folders = sorted({p.split("/")[0] for p in paths}) if all("/" in p for p in paths) else []
    return {"n": n, "paths": paths, "status": status, "labels": labels, "flags": flags, "ok": ok, "folders": folders}


def test_report_is_self_contained_and_its_numbers_match_the_file(results_with_images: tuple[Path, Path], tmp_path: Path) -> None:
    results, _ = results_with_images
    out = tmp_path / "report.html"
    write_report(results, out, group_by="1")
    page = PageParser()
    page.feed(out.read_text(encoding="utf-8"))

    assert not page.tags & {"script", "link", "iframe", "object", "embed"}
    assert page.urls and all(value.startswith("data:image/") for _, _, value in page.urls), page.urls[:3]
    assert "url(" not in out.read_text(encoding="utf-8")

    truth = _independent_counts(results)
    ok, flags, labels = truth["ok"], truth["flags"], truth["labels"]
    assert isinstance(ok, np.ndarray) and isinstance(flags, np.ndarray) and isinstance(labels, np.ndarray)
    assert page.values["rows"] == [str(truth["n"])]
    assert page.values["status-ok"] == [str(int(ok.sum()))]
    assert page.values["status-decode_error"] == [str(int((~ok).sum()))]
    assert page.values["flagged"] == [str(int((ok & (flags != 0)).sum()))]
    junk = ok & ((flags & NOT_A_SMEAR_BITS) != 0)
    assert page.values["not-a-smear"] == [str(int(junk.sum()))] == ["1"]
    for k, name in enumerate(CLASS_NAMES):  # an image that is not a smear reaches no class total
        assert page.values[f"class-{name}"] == [str(int((ok & ~junk & (labels == k)).sum()))]

    paths = truth["paths"]
    assert isinstance(paths, list)
    for folder in ("Slide A", "Slide B"):
        rows = np.array([p.startswith(folder + "/") for p in paths])
        usable = rows & ok & (flags == 0)
        expected = {
            "images": str(int(rows.sum())),
            "failed": str(int((rows & ~ok).sum())),
            "flagged": str(int((rows & ok & (flags != 0)).sum())),
            "not-a-smear": str(int((rows & junk).sum())),
            "usable": str(int(usable.sum())),
        }
        votes = np.bincount(labels[usable].astype(int), minlength=4)
        expected["verdict"] = expected_verdict(votes)
        expected["benign-tail"] = page.folders[folder]["benign-tail"]
        assert page.folders[folder] == expected
    assert page.folders["Slide A"]["verdict"] == "ALL, subtype mixed"  # 7 usable images, 5 ALL votes over three subtypes
    assert page.folders["Slide B"]["verdict"] == "ALL (Pre-B)"
    assert float(page.folders["Slide B"]["benign-tail"]) < 1e-20
    assert "Benign images called ALL: 2 of 75" in " ".join(page.text)  # the rule states its rates

    # flagged cards are capped; the flagged files of slide B do not exist and show as missing
    flagged_total = int((ok & (flags != 0)).sum())
    assert flagged_total > MAX_FLAGGED_THUMBS // 2
    assert sum(1 for p in page.cards if p.startswith("Slide B/")) <= MAX_FLAGGED_THUMBS + 24
    text = " ".join(page.text)
    assert "image missing" in text
    assert "cannot decode: truncated" in text  # the failed file with its error


def test_report_has_eval_and_misclassified_when_folders_name_classes(results_with_images: tuple[Path, Path], tmp_path: Path) -> None:
    results, _ = results_with_images
    out = tmp_path / "report.html"
    content, _ = write_report(results, out)
    page = PageParser()
    page.feed(out.read_text(encoding="utf-8"))
    assert content.evaluation is not None
    wrong = [m.path for m in content.evaluation.misclassified]
    assert len(wrong) == 1 and wrong[0].startswith("Slide A/")
    assert wrong[0] in page.cards
    confusion = content.evaluation.multiclass.confusion
    assert int(page.values["confusion-0-0"][0]) == int(confusion[0, 0])
    assert float(page.values["accuracy"][0]) == pytest.approx(6 / 7, abs=1e-4)  # the blurred image is not a smear: left out
    assert (
        content.evaluation.not_a_smear == [p for p in content.evaluation.not_a_smear if p.startswith("Slide A/")]
        and len(content.evaluation.not_a_smear) == 1
    )


def test_report_cli_refuses_a_missing_file_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    cli_app._register()
    result = CliRunner().invoke(cli_app.app, ["report", str(tmp_path / "nope.h5"), "-o", str(tmp_path / "r.html")])
    assert result.exit_code != 0
    assert "results file not found" in str(result.exception)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed (scripts/test.sh installs Debian's chromium package; apt-get was not available here)")


def test_report_without_class_folders_has_no_evaluation(tmp_path: Path) -> None:
    out = tmp_path / "r.h5"
    with ResultsWriter.open(out, mode="new", provenance={"input_root": str(tmp_path), "model_manifest": MANIFEST}, compat={}) as writer:
        writer.append(_rows([(f"patient 7/slide 2/img{i}.jpg", 1, int(ImageStatus.OK), 0) for i in range(6)]))
    content, _ = write_report(out, tmp_path / "r.html")
    assert content.evaluation is None and content.groups.groups[0].verdict == "ALL (Early Pre-B)"
    assert "Against folder names" not in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_report_renders_in_headless_chromium(results_with_images: tuple[Path, Path], tmp_path: Path) -> None:
    browser = _chromium()
    results, _ = results_with_images
    out = tmp_path / "report.html"
    write_report(results, out)
    png = tmp_path / "report.png"
    common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    env = {**os.environ, "HOME": str(tmp_path)}
    shot = subprocess.run(
        [browser, *common, "--hide-scrollbars", "--window-size=1200,1600", f"--screenshot={png}", out.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert png.is_file(), shot.stderr[-2000:]
    with Image.open(png) as image:
        assert image.size == (1200, 1600)
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 10  # text, tables and thumbnails, not a blank or error page
    for bad in ("Failed to load resource", "ERR_FILE_NOT_FOUND", "ERR_NAME_NOT_RESOLVED", ":CONSOLE("):
        assert bad not in shot.stderr, shot.stderr[-2000:]
    dom = subprocess.run([browser, *common, "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120, env=env)
    assert "<h1>allbatch report</h1>" in dom.stdout
    assert 'data-value="rows">69<' in dom.stdout
