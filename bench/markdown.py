"""Markdown tables for the bench's reports: the header, the separator, and the cells padded per column."""

from __future__ import annotations


def table(lines: list[list[str]]) -> str:
    """`lines[0]` is the header; every line has as many cells as it."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for i, line in enumerate(lines):
        out.append("| " + " | ".join(cell.ljust(widths[j]) for j, cell in enumerate(line)) + " |")
        if i == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)
