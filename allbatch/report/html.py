"""Render the report: one HTML file with inline CSS, inline SVG and base64 images (no script, no link out)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from markupsafe import Markup, escape

from allbatch import __version__
from allbatch.core.atomic_file import write_text
from allbatch.core.errors import UserInputError
from allbatch.core.pathtext import safe_text
from allbatch.report.content import MAX_TABLE_ROWS, ImageCard, ReportContent, gather
from allbatch.report.svg import bar_chart
from allbatch.summarize.groups import VerdictRule
from allbatch.summarize.render import tail_text

log = logging.getLogger("allbatch.report")
TEMPLATE = Path(__file__).with_name("template.html.j2")


def render_card(card: ImageCard) -> Markup:
    """One image: thumbnail and mask side by side (or "missing"), path, prediction, flags."""
    if card.thumbnail is not None:
        pictures = Markup('<img src="{}" alt="image"><img src="{}" alt="segmentation mask">').format(
            card.thumbnail.image, card.thumbnail.mask
        )
    else:
        pictures = Markup('<span class="missing">image missing</span>')
    truth = Markup("truth <b>{}</b>, ").format(card.truth) if card.truth else ""
    tags = Markup("").join(Markup('<span class="tag">{}</span>').format(word) for word in card.flags)
    return Markup('<div class="card" data-path="{}">{}<div class="path">{}</div>{}predicted <b>{}</b> {:.2f} {}</div>').format(
        card.path, pictures, card.path, truth, card.predicted, card.confidence, tags
    )


def render(content: ReportContent) -> str:
    """The page as a string."""
    import jinja2

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    template = environment.from_string(TEMPLATE.read_text(encoding="utf-8"))
    return template.render(
        c=content,
        version=__version__,
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
        chart=Markup(bar_chart(content.class_counts)),
        render_card=render_card,
        tail_text=tail_text,
        max_rows=MAX_TABLE_ROWS,
        escape=escape,
    )


def write_report(
    results: Path,
    out: Path,
    *,
    group_by: str = "parent",
    rule: VerdictRule | None = None,
    image_root: Path | None = None,
    labels_file: Path | None = None,
) -> tuple[ReportContent, float]:
    """Build the report of ``results`` into ``out`` (written beside and renamed, so never half a file).

    Returns the content and the seconds it took.
    """
    out = Path(out)
    if out.is_dir():
        raise UserInputError(f"-o {out} is a folder")
    if not out.parent.is_dir():
        raise UserInputError(f"the folder for {out} does not exist")
    started = time.perf_counter()
    content = gather(results, group_by=group_by, rule=rule, image_root=image_root, labels_file=labels_file)
    # Text from the file (a run's argv, attributes written by older versions) can hold lone surrogates (file-name
    # bytes that are not UTF-8); they are shown escaped (\udcff), as everywhere else, rather than failing the write.
    page = safe_text(render(content))
    write_text(out, page)
    seconds = time.perf_counter() - started
    log.debug("report %s: %d bytes in %.2f s", out, len(page), seconds)
    return content, seconds
