"""Inline SVG charts for the report (no script, no external file): plain strings, values escaped."""

from __future__ import annotations

from html import escape

PALETTE = ("#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7")


def bar_chart(counts: dict[str, int], width: int = 520, bar_height: int = 22) -> str:
    """Horizontal bars, one per key, labelled with the count and the share of the total."""
    total = sum(counts.values())
    label_width, gap = 110, 6
    height = len(counts) * (bar_height + gap) + gap
    longest = max(counts.values(), default=0) or 1
    scale = (width - label_width - 120) / longest
    parts = [f'<svg width="{width}" height="{height}" role="img" aria-label="counts per class">']
    for i, (name, count) in enumerate(counts.items()):
        y = gap + i * (bar_height + gap)
        share = f"{count / total:.1%}" if total else "-"
        colour = PALETTE[i % len(PALETTE)]
        parts.append(f'<text x="0" y="{y + bar_height * 0.7:.1f}" font-size="13">{escape(name)}</text>')
        parts.append(f'<rect x="{label_width}" y="{y}" width="{count * scale:.1f}" height="{bar_height}" fill="{colour}"/>')
        end = label_width + count * scale + 6
        parts.append(f'<text x="{end:.1f}" y="{y + bar_height * 0.7:.1f}" font-size="13">{count} ({share})</text>')
    parts.append("</svg>")
    return "".join(parts)
