"""Devices scaling sweep: FedAvg on 10 to 1000 devices, IID and Dirichlet, 3 seeds; then a report.

    .venv/bin/python simulations/sweep_clients.py            # configs/sweep_clients.toml
    .venv/bin/python simulations/sweep_clients.py --quick    # smoke test: 10 and 20 devices, tiny
    .venv/bin/python simulations/sweep_clients.py --set model.img_size=56 --out results/x

A thin wrapper over `miet-fed sweep configs/sweep_clients.toml` and `miet-fed report`: the sweep
resumes (finished runs are skipped), so an interrupted script can simply be started again.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from miet_fed import study  # noqa: E402

CONFIG = ROOT / "configs" / "sweep_clients.toml"
#: --quick: a few hundred images at 56 px, two short rounds: minutes, not hours, on 2 cores.
QUICK_SET = {
    "data.n_train": 200,
    "data.n_test": 100,
    "model.img_size": 56,
    "fed.rounds": 2,
    "train.epochs": 2,
}
QUICK_GRID = {"fed.partition": ["iid"]}
QUICK_POINTS = [
    {"fed.num_clients": 10, "fed.clients_per_round": 5},
    {"fed.num_clients": 20, "fed.clients_per_round": 10},
]


def main(argv: list[str] | None = None) -> int:
    return study.main(
        "sweep_clients", __doc__.split("\n")[0], CONFIG, QUICK_SET, QUICK_GRID, argv, QUICK_POINTS
    )


if __name__ == "__main__":
    sys.exit(main())
