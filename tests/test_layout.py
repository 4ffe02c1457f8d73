"""The house rules a newcomer relies on (issue 12): modules one can read in one sitting, no
import cycle among the package's modules at import time (lazy imports inside functions are how
the registries and the config meet), cloud and edge code free of Flower."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "miet_fed"
MAX_LINES = 400  # the "about 400"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports_at_import_time(path: Path, modules: dict[str, Path]) -> set[str]:
    """miet_fed modules a module imports when it is imported: top-level statements only (not
    inside functions, not under `if TYPE_CHECKING:`), each with its parent packages."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        for name in names:
            parts = name.split(".")
            found |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)}
    return {m for m in found if m in modules}


def test_no_module_is_longer_than_one_sitting():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules().values()
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these by concern: {long}"


def test_no_import_cycle_at_import_time():
    modules = _modules()
    graph = {m: _imports_at_import_time(p, modules) - {m} for m, p in modules.items()}
    for m in list(graph):  # importing a package's child runs the package first
        graph[m] |= {".".join(m.split(".")[:i]) for i in range(2, m.count(".") + 1)} - {m}
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append(path[path.index(d) :] + [d] if d in path else [m, d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    # a package importing its own children is not a cycle (they do not import it back at once)
    real = [c for c in cycles if not all(c[0].startswith(x) or x.startswith(c[0]) for x in c)]
    assert not real, f"import cycles: {real[:5]}"


def test_cloud_and_edge_do_not_import_flower():
    offenders = [
        str(p.relative_to(PACKAGE))
        for sub in ("cloud", "edge", "privacy")
        for p in (PACKAGE / sub).rglob("*.py")
        if "import flwr" in p.read_text() or "from flwr" in p.read_text()
    ]
    assert not offenders, offenders
