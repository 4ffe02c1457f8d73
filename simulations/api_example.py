"""The Python API end to end: run a few simulations, load them, and read their communication
cost in pandas.

    .venv/bin/python simulations/api_example.py            # 2 strategies x 2 device counts
    .venv/bin/python simulations/api_example.py --quick    # tiny random ViT, 10 devices: smoke

Runs go to results/api_example/<strategy>-n<clients>/; a run already there with the same
settings is reused (resumed or replaced by the library's own rules), so the script can be
started again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import miet_fed  # noqa: E402

#: Small enough for a 2-core laptop: 400 animal-mnist images, 3 rounds of 2 local epochs.
SETTINGS = {
    "data.n_train": 400,
    "data.n_test": 200,
    "fed.rounds": 3,
    "train.epochs": 2,
}
#: --quick: a tiny randomly initialised ViT at 32 px (no pretrained weights needed).
QUICK = {
    "model.name": "vit_tiny_patch16_224",
    "model.weights": "random",
    "model.img_size": 32,
    "data.n_train": 100,
    "data.n_test": 50,
    "fed.rounds": 2,
    "train.epochs": 1,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny random ViT (smoke test)")
    parser.add_argument("--out", type=Path, default=Path("results/api_example"))
    args = parser.parse_args(argv)
    try:
        with miet_fed.ray_session():  # one Ray instance and backbone actor for all the runs
            for strategy in ("fedavg", "fedper"):
                for clients in (10,) if args.quick else (5, 10):
                    run = miet_fed.simulate(
                        overrides={
                            **(QUICK if args.quick else SETTINGS),
                            "fed.strategy": strategy,
                            "fed.num_clients": clients,
                        },
                        out=args.out / f"{strategy}-n{clients}",
                        quiet=True,
                    )
                    print(f"{run.path}: personal acc {run.info['personal_acc']:.3f}", flush=True)

        # The analysis: five lines of pandas.
        runs = miet_fed.load_runs(args.out)
        keys = ["strategy", "num_clients", "seed", "direction", "kind"]
        cost = runs.ledger.groupby(keys)["bytes"].sum().unstack(["direction", "kind"])
        print((cost / 1e6).round(3).to_string())  # MB per run, by direction and kind
        print(runs.comm_cost()[["run", "bytes_up", "bytes_down", "bytes_total"]].to_string())
    except miet_fed.MietError as exc:
        print(f"api_example: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
