"""GitHub markdown tables, built in one place: the report, the config reference, the benchmark
harness and the study scripts format their own cells and hand the strings here."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def escape(cell: Any) -> str:
    """A cell's text that cannot break the table: `|` escaped, newlines as spaces."""
    return str(cell).replace("|", "\\|").replace("\n", " ")


def table(header: Sequence[Any], rows: Iterable[Sequence[Any]], right: Iterable[Any] = ()) -> str:
    """Header line, separator, one line per row (no trailing newline); columns named in `right`
    are right-aligned (`---:`). Cells are escaped, so a `|` in a value stays in its column."""
    right = set(right)
    lines = [
        "| " + " | ".join(escape(h) for h in header) + " |",
        "|" + "|".join("---:" if h in right else "---" for h in header) + "|",
    ]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
