"""The report's figures from real small runs, for results/README.md: every plot `miet-fed report`
draws, rendered from two small sweeps on the real backbone (DINOv2 ViT-S/14 at 112 px,
animal-mnist) and copied to results/figures/.

    .venv/bin/python simulations/report_figures.py            # a few minutes on 2 cores
    .venv/bin/python simulations/report_figures.py --quick    # tiny random ViT, seconds (smoke)

- one device (`tune`): Gather* (sum) at k = 6 and 12 and the last layer with the LAE, the CLS
  token with a linear probe; 200 selected images (160 train, 40 validation) and 200 test
  images, 10 epochs, seed 0;
- devices (`simulate`): FedAvg and FedPer on 5 and 10 devices sharing 400 images (Dirichlet 0.3),
  3 rounds of 2 local epochs, seed 0.

Both sweeps resume (finished runs are skipped), so the script can simply be started again.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from miet_fed.errors import MietError  # noqa: E402
from miet_fed.report import make_report  # noqa: E402
from miet_fed.sweep import Sweep  # noqa: E402
from miet_fed.sweep_run import run_sweep  # noqa: E402

TUNE_POINTS = [
    {"model.gather": "sum", "model.k": 12, "edge.name": "lae"},
    {"model.gather": "sum", "model.k": 6, "edge.name": "lae"},
    {"model.gather": "last", "model.k": 12, "edge.name": "lae"},
    {"model.gather": "cls", "model.k": 12, "edge.name": "linear"},
]
TUNE_SET = {"data.n_train": 200, "data.n_val": 40, "data.n_test": 200, "train.epochs": 10}
SIM_GRID = {"fed.strategy": ["fedavg", "fedper"], "fed.num_clients": [5, 10]}
SIM_SET = {"data.n_train": 400, "data.n_test": 200, "fed.rounds": 3, "train.epochs": 2}
#: --quick: the tiny random ViT the tests use, on the built-in digits (no weights needed).
QUICK_SET = {
    "model.name": "vit_tiny_patch16_224",
    "model.weights": "random",
    "model.img_size": 32,
    "data.dataset": "digits",
    "data.n_train": 60,
    "data.n_test": 30,
}
QUICK_SIM = {"fed.rounds": 2, "train.epochs": 1, "fed.partition": "iid"}
#: report file -> name under results/figures/
FIGURES = {
    "tune": {
        "pareto.png": "tune_pareto.png",
        "curves.png": "tune_curves.png",
    },
    "tune_run": {"accuracy_per_epoch.png": "tune_accuracy_per_epoch.png"},
    "simulate": {
        "pareto.png": "simulate_pareto.png",
        "vs_clients.png": "simulate_vs_clients.png",
        "client_spread.png": "simulate_client_spread.png",
        "curves.png": "simulate_curves.png",
    },
    "simulate_run": {
        "accuracy_per_round.png": "simulate_accuracy_per_round.png",
        "bytes_per_round.png": "simulate_bytes_per_round.png",
    },
}


def sweeps(quick: bool) -> dict[str, Sweep]:
    extra = QUICK_SET if quick else {}
    suffix = "-quick" if quick else ""
    tune = Sweep(
        name=f"figures_tune{suffix}",
        command="tune",
        base=ROOT / "configs" / "tune.toml",
        fixed={**TUNE_SET, **extra, **({"train.epochs": 2, "data.n_val": 12} if quick else {})},
        points=TUNE_POINTS,
    )
    sim = Sweep(
        name=f"figures_simulate{suffix}",
        command="simulate",
        base=ROOT / "configs" / "simulate.toml",
        fixed={**SIM_SET, **extra, **(QUICK_SIM if quick else {})},
        grid=SIM_GRID,
    )
    return {"tune": tune, "simulate": sim}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="report_figures", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny random ViT (smoke test)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="sweeps go here")
    parser.add_argument("--figures", type=Path, default=ROOT / "results" / "figures")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    copied = []
    try:
        for kind, sweep in sweeps(args.quick).items():
            out = args.results / sweep.name
            points, outcomes = run_sweep(sweep, out, quiet=args.quiet)
            if any(o.status == "failed" for o in outcomes.values()):
                raise MietError(f"a run of {out} failed; see {out}/summary.csv")
            reports = {kind: make_report(out).parent}
            one = points[0].folder  # the first point's run: its own plots
            reports[f"{kind}_run"] = make_report(one, args.results / f"{sweep.name}-run").parent
            args.figures.mkdir(parents=True, exist_ok=True)
            for source, names in FIGURES.items():
                if source not in reports:
                    continue
                for name, target in names.items():
                    shutil.copyfile(reports[source] / name, args.figures / target)
                    copied.append(args.figures / target)
    except (MietError, FileNotFoundError) as exc:
        print(f"report_figures: error: {exc}", file=sys.stderr)
        return 2
    for path in copied:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
