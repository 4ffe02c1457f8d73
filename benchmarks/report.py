"""What a benchmark returns and how the harness prints it (the BENCHMARKS.md conventions).

A benchmark fills a `Report`: its settings, every figure (the JSON), table rows, and checks of a
measured value against a target (the summary table: benchmark, metric, value, target, met?).
Cells read as in BENCHMARKS.md: three significant digits, thousands separators, `-` for
missing, yes/no for booleans.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from miet_fed.markdown import table


@dataclass
class Report:
    """What one benchmark found: its settings, every figure, table rows and target checks."""

    name: str
    description: str
    settings: dict[str, Any] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    def check(self, metric: str, value: float | None, target: str, met: bool | None) -> None:
        """One line of the summary table: a measured value against its target."""
        self.checks.append({"metric": metric, "value": value, "target": target, "met": met})

    def to_dict(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "settings": self.settings,
            "figures": self.figures,
            "rows": self.rows,
            "checks": self.checks,
            "notes": self.notes,
            "seconds": round(self.seconds, 2),
            "error": self.error,
        }


def ratio(a: float | None, b: float | None) -> float | None:
    """a / b, or None when either is missing or b is zero."""
    if a is None or b is None or b == 0:
        return None
    return a / b


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt(value: Any) -> str:
    """Human-readable cell: 3 significant digits for floats, thousands separators for ints."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # nan
            return "nan"
        if value == 0:
            return "0"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.3g}"
    return str(value)


def md_table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts as one markdown table; columns in order of first appearance."""
    if not rows:
        return ""
    cols: list[str] = []
    for row in rows:
        cols += [c for c in row if c not in cols]
    return table(cols, ([fmt(row.get(c)) for c in cols] for row in rows))


def summary_rows(reports: dict[str, Report]) -> list[dict[str, Any]]:
    rows = []
    for name, rep in reports.items():
        if rep.error:
            rows.append({"benchmark": name, "metric": "error", "value": rep.error.splitlines()[0]})
        for c in rep.checks:
            met = c["met"]
            rows.append(
                {
                    "benchmark": name,
                    "metric": c["metric"],
                    "value": c["value"],
                    "target": c["target"],
                    "met?": "-" if met is None else ("yes" if met else "NO"),
                }
            )
    return rows


def report_markdown(rep: Report, size: str) -> str:
    parts = [f"### `{rep.name}` ({size}, {rep.seconds:.0f} s)", "", rep.description, ""]
    if rep.settings:
        parts += ["Settings: " + ", ".join(f"{k}={v}" for k, v in rep.settings.items()), ""]
    if rep.error:
        parts += ["**failed:**", "", "```", rep.error, "```", ""]
    if rep.rows:
        parts += [md_table(rep.rows), ""]
    if rep.checks:
        checks = [
            {"metric": c["metric"], "value": c["value"], "target": c["target"], "met?": c["met"]}
            for c in rep.checks
        ]
        parts += [md_table(checks), ""]
    parts += [f"- {n}" for n in rep.notes]
    return "\n".join(parts).rstrip() + "\n"
