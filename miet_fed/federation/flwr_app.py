"""The ServerApp `flwr run .` starts (pyproject's `[tool.flwr.app.components]`).

Under `flwr run` nobody has prepared the run: this app reads the app config, prepares it as
`miet-fed simulate` would (`runner.run_from_flwr`), packs the devices onto the federation's
SuperNodes and runs the same server loop. The ClientApp is the same as in `miet-fed simulate`.

The app config in pyproject.toml is the whole simulate config as Flower's native nested tables
(so `flwr run . --run-config "fed.rounds=3"` works), generated from `configs/simulate.toml`:
`python -m miet_fed.federation.flwr_app` prints them; a test fails when they drift apart.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    from miet_fed.federation.runner import run_from_flwr

    run_from_flwr(grid, context)


ROOT = Path(__file__).resolve().parents[2]


def app_config_tables(config: Path = ROOT / "configs" / "simulate.toml") -> dict[str, Any]:
    """Every simulate key with the value `configs/simulate.toml` gives it, by section, and every
    strategy's own table (`[fed.fedprox]`...) with its defaults, so `--run-config` can set any
    of them. `run.plugins` and `data.tasks` are left out: Flower's config values are scalars,
    not lists, and a plugin's names could not be checked before it is loaded."""
    from miet_fed.config import SimulateConfig, load_config, to_dict
    from miet_fed.config.reference import strategy_rows

    tables = to_dict(load_config(SimulateConfig, config, {}))
    tables["run"].pop("plugins")
    tables["data"].pop("tasks")  # a list of tables: `flwr run` takes one dataset
    for row in strategy_rows():
        _, strategy, key = row.key.split(".")
        tables["fed"].setdefault(strategy, {}).setdefault(key, row.default)
    return tables


def app_config_toml() -> str:
    from miet_fed.config import toml_text

    return toml_text(app_config_tables(), "tool.flwr.app.config.")


if __name__ == "__main__":
    sys.stdout.write(app_config_toml())
