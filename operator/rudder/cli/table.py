"""kubectl's plain table: upper-case headers, columns padded to their widest cell (pure)."""

from __future__ import annotations

from collections.abc import Sequence

NONE = "<none>"  # what kubectl prints for an empty cell, so columns split on spaces


def render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    rows = [[cell or NONE for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = [headers, *rows]
    return "".join(
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        + "\n"
        for line in lines
    )
