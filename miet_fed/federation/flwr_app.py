"""The ServerApp `flwr run .` starts (pyproject's `[tool.flwr.app.components]`).

Under `flwr run` nobody has prepared the run: this app reads the app config, prepares it as
`miet-fed simulate` would (`runner.run_from_flwr`), packs the devices onto the federation's
SuperNodes and runs the same server loop. The ClientApp is the same as in `miet-fed simulate`.
"""

from __future__ import annotations

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    from miet_fed.federation.runner import run_from_flwr

    run_from_flwr(grid, context)
