"""The short terminal view of a run: images per predicted class and the per-folder verdicts (rich)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from allbatch.core.safe_text import printable
from allbatch.summarize.groups import GroupTable

MAX_FOLDERS_SHOWN = 20
"""Folders listed in the terminal; the rest are counted in one line (the report and CSV list them all)."""


def groups_table(groups: GroupTable, max_rows: int = MAX_FOLDERS_SHOWN) -> Table:
    """A rich table: one row per folder (usable votes per class, flagged, verdict), then a total row."""
    names = groups.class_names
    where = "parent folder" if groups.group_by == "parent" else f"depth {groups.group_by}"
    title = f"Per folder ({where}): votes of usable images (n images, flag flagged, fail failed)"
    table = Table(title=title, title_justify="left")
    table.add_column("folder", overflow="fold", min_width=8)
    table.add_column("n", justify="right", no_wrap=True)
    table.add_column("flag", justify="right", no_wrap=True)
    table.add_column("fail", justify="right", no_wrap=True)
    for name in names:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True, min_width=12)
    for group in groups.groups[:max_rows]:
        style = "" if group.verdict in names else "yellow"
        table.add_row(
            Text(printable(group.name)),  # a folder name is text, never Rich markup or control characters
            str(group.images),
            str(group.flagged),
            str(group.failed),
            *[str(v) for v in group.votes],
            f"[{style}]{group.verdict}[/]" if style else group.verdict,
        )
    hidden = len(groups.groups) - max_rows
    if hidden > 0:
        table.add_row(f"... {hidden} more folders (allbatch export --groups, allbatch report)", "", "", "", *[""] * len(names), "")
    total_votes = [sum(g.votes[i] for g in groups.groups) for i in range(len(names))]
    counts = groups.verdict_counts()
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "-"
    table.add_row(
        "[bold]all[/]",
        str(sum(g.images for g in groups.groups)),
        str(sum(g.flagged for g in groups.groups)),
        str(sum(g.failed for g in groups.groups)),
        *[str(v) for v in total_votes],
        "",
        end_section=True,
    )
    table.caption = f"verdicts: {summary}. Rule: {groups.rule.describe()}"
    table.caption_justify = "left"
    return table
