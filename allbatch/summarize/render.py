"""The short terminal view of a run: images per predicted class and the per-folder verdicts (rich)."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from allbatch.core.safe_text import printable
from allbatch.summarize.groups import BENIGN_CLASS, GroupSummary, GroupTable

MAX_FOLDERS_SHOWN = 20
"""Folders listed in the terminal; the rest are counted in one line (the report and CSV list them all)."""


def tail_text(value: float) -> str:
    """A Benign tail probability in a few characters: "0.31", "0.004", "4e-05"; "-" when not computed."""
    if value != value:  # NaN
        return "-"
    return f"{value:.2g}" if value >= 0.001 else f"{value:.0e}"


def verdict_style(group: GroupSummary) -> str:
    """Rich style of a verdict: ALL in bold red, Benign plain, no call (insufficient, no rate) in yellow."""
    if group.verdict.startswith("ALL"):
        return "bold red"
    return "" if group.verdict == BENIGN_CLASS else "yellow"


def groups_table(groups: GroupTable, max_rows: int = MAX_FOLDERS_SHOWN) -> Table:
    """A rich table: one row per folder (flagged and not-a-smear counts, usable votes per class, Benign tail
    probability, verdict), then a total row; the caption gives the verdict counts and the rule with its rates."""
    names = groups.class_names
    where = "parent folder" if groups.group_by == "parent" else f"depth {groups.group_by}"
    title = (
        f"Per folder ({where}): votes of usable images (n images, flag flagged, junk of them not a smear, fail failed, "
        "p: chance of this many ALL votes from a Benign folder)"
    )
    table = Table(title=title, title_justify="left")
    table.add_column("folder", overflow="fold", min_width=8)
    for column in ("n", "flag", "junk", "fail"):
        table.add_column(column, justify="right", no_wrap=True)
    for name in names:
        table.add_column(name, justify="right", no_wrap=True)
    table.add_column("p", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True, min_width=12)
    for group in groups.groups[:max_rows]:
        table.add_row(
            Text(printable(group.name)),  # a folder name is text, never Rich markup or control characters
            str(group.images),
            str(group.flagged),
            str(group.not_a_smear),
            str(group.failed),
            *[str(v) for v in group.votes],
            tail_text(group.benign_tail),
            Text(group.verdict, style=verdict_style(group)),
        )
    hidden = len(groups.groups) - max_rows
    if hidden > 0:
        table.add_row(f"... {hidden} more folders (allbatch export --groups, allbatch report)", *[""] * (len(names) + 6))
    total_votes = [sum(g.votes[i] for g in groups.groups) for i in range(len(names))]
    counts = groups.verdict_counts()
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v) or "-"
    table.add_row(
        "[bold]all[/]",
        str(sum(g.images for g in groups.groups)),
        str(sum(g.flagged for g in groups.groups)),
        str(sum(g.not_a_smear for g in groups.groups)),
        str(sum(g.failed for g in groups.groups)),
        *[str(v) for v in total_votes],
        "",
        "",
        end_section=True,
    )
    table.caption = Text(f"verdicts: {summary}. Rule: {groups.rule.describe()}")
    table.caption_justify = "left"
    return table
