"""The ServerApp `flwr run .` starts (pyproject's `[tool.flwr.app.components]`).

Under `flwr run` nobody has prepared the run: this app reads the app config, prepares it as
`miet-fed simulate` would (`runner.run_from_flwr`), packs the devices onto the federation's
SuperNodes and runs the same server loop. The ClientApp is the same as in `miet-fed simulate`.

The app config in pyproject.toml is the whole simulate config as Flower's native nested tables
(so `flwr run . --run-config "fed.rounds=3"` works), generated from `configs/simulate.toml`:
`python -m miet_fed.federation.flwr_app` prints them; a test fails when they drift apart.
"""

from __future__ import annotations

import json
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
    """Every simulate key with the value `configs/simulate.toml` gives it, by section."""
    from miet_fed.config import SimulateConfig, load_config, to_dict

    return to_dict(load_config(SimulateConfig, config, {}))


def app_config_toml() -> str:
    lines = []
    for section, values in app_config_tables().items():
        lines.append(f"[tool.flwr.app.config.{section}]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(app_config_toml())
