"""One unit convention for bytes everywhere a reader sees them: SI (1 kB = 1000 B), as in the
plots, the report tables, `miet-fed cost` and the README."""

from __future__ import annotations

import math

UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def human_bytes(n: float | None) -> str:
    """605184 -> '605 kB', 1758800 -> '1.76 MB'; three significant digits, '–' for missing."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "–"
    value = float(n)
    for unit in UNITS:
        if unit == "B" and abs(value) < 1000:
            return f"{value:.0f} B"
        if unit != "B" and (abs(float(f"{value:.3g}")) < 1000 or unit == UNITS[-1]):
            return f"{value:.3g} {unit}"
        value /= 1000
    raise AssertionError("unreachable")
