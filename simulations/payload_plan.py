"""The payload planner against one format for all: accuracy per device group as the budget shrinks.

    .venv/bin/python simulations/payload_plan.py            # 4 budgets x 3 seeds (about 40 min)
    .venv/bin/python simulations/payload_plan.py --quick    # tiny random ViT: a smoke test

Devices' downlinks spread log-normally around a median (`[link]`); each budget caps every
device's one-time payload download (`plan.budget_seconds`). For each budget the planner gives
each device the most accurate format its link fits (`plan`); the baseline sends every device the
one most accurate format the slowest device still fits (`single`). Both run the same federation
(the default simulate job) from the same cached fp32 features; personal accuracy of the last
round is averaged per device group (a third of the devices each, by downlink) and over seeds.
Runs go to results/payload_plan/runs/<name>/ and are reused when the script is started again;
the table is written to results/payload_plan/plan_vs_single.csv and the figure next to it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import miet_fed  # noqa: E402
from miet_fed.api import build  # noqa: E402
from miet_fed.federation.runner import prepare  # noqa: E402

FORMATS = "fp32,fp16,int8,fp16-p2,int8-p2,fp16-p4,int8-p4,fp16-p8,int8-p8"
#: The default simulate job (20 devices, Dirichlet 0.3, FedPer) on slow, spread-out downlinks.
SETTINGS = {"link.down_mbps": 1.0, "link.spread": 1.0, "plan.formats": FORMATS}
BUDGETS = (30.0, 10.0)  # seconds per device, one-time payload download
SEEDS = (0, 1, 2)
REFERENCE = "fp32"  # what a run without a plan sends every device
QUICK = {
    "model.name": "vit_tiny_patch16_224",
    "model.weights": "random",
    "model.img_size": 64,
    "model.k": 3,
    "data.n_train": 200,
    "data.n_test": 50,
    "fed.rounds": 2,
    "train.epochs": 1,
    "link.down_mbps": 1.0,
    "plan.formats": "fp32,int8,int8-p2,int8-p4",
}
GROUPS = ("slow", "middle", "fast")


def _assignment(overrides: dict) -> tuple[tuple[str, ...], str]:
    """(each device's format, the best single format) that `overrides` would run."""
    cfg = build("simulate", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        plan = prepare(cfg, Path(tmp)).plan
    assert plan is not None
    return tuple(plan.frame["format"]), plan.baseline


def runs_for(seed: int, base: dict, budgets: tuple[float, ...]) -> dict[str, dict]:
    """One seed's runs (name -> overrides): the reference format for all, and per budget the
    plan and the best single format, each distinct assignment of formats run once."""
    runs: dict[str, dict] = {}
    seen: dict[tuple[str, ...], str] = {}

    def add(label: str, overrides: dict) -> str:
        formats, _ = _assignment(overrides)
        if formats not in seen:
            seen[formats] = f"{label}-s{seed}"
            runs[seen[formats]] = overrides
        return seen[formats]

    fixed = {**base, "run.seed": seed}
    labels = {"reference": add(REFERENCE, {**fixed, "plan.formats": REFERENCE})}
    for budget in budgets:
        planned = {**fixed, "plan.budget_seconds": budget}
        _, single = _assignment(planned)
        labels[f"plan {budget:g} s"] = add(f"plan-b{budget:g}", planned)
        labels[f"single {budget:g} s"] = add(single, {**fixed, "plan.formats": single})
    return {"runs": runs, "labels": labels}


def groups(run: Path) -> pd.DataFrame:
    """Last round's personal accuracy per device, with its downlink group and format."""
    plan = pd.read_csv(run / "plan.csv")
    clients = pd.read_csv(run / "clients.csv")
    last = clients[clients["round"] == clients["round"].max()].dropna(subset=["personal_acc"])
    df = last[["client", "personal_acc", "n_test"]].merge(plan, on="client")
    rank = df["down_mbps"].rank(method="first")
    df["group"] = pd.cut(rank, 3, labels=list(GROUPS))
    return df


def summarise(out: Path, index: dict[str, dict]) -> pd.DataFrame:
    """One row per (seed, label): formats, feature bytes, personal accuracy per group."""
    rows = []
    for seed, labels in index.items():
        for label, name in labels.items():
            run = out / "runs" / name
            df = groups(run)
            summary = json.loads((run / "summary.json").read_text())
            row = {"label": label, "seed": int(seed), "run": name}
            row["formats"] = ", ".join(
                f"{f} x{n}" for f, n in sorted(summary.get("plan_formats", {}).items())
            )
            row["feature_MB"] = summary["bytes_by_kind"]["feature"] / 1e6
            row["max_download_s"] = float(df.download_seconds.max())
            row["all"] = float(np.average(df.personal_acc, weights=df.n_test))
            for g in GROUPS:
                part = df[df.group == g]
                row[g] = float(np.average(part.personal_acc, weights=part.n_test))
            rows.append(row)
    return pd.DataFrame(rows)


def plot(table: pd.DataFrame, path: Path) -> None:
    """Accuracy per device group against feature bytes, one point per label (mean of seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mean = table.groupby("label", sort=False)[["feature_MB", "all", *GROUPS]].mean()
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.6), sharey=True)
    for ax, col in zip(axes, ["all", *GROUPS], strict=True):
        for label, row in mean.iterrows():
            ax.scatter(row["feature_MB"], 100 * row[col], label=label)
        ax.set_xscale("log")
        ax.set_xlabel("feature download, all devices (MB)")
        ax.set_title("all devices" if col == "all" else f"{col} third of the devices")
    axes[0].set_ylabel("personal accuracy, last round (%)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny random ViT (smoke test)")
    parser.add_argument("--out", type=Path, default=Path("results/payload_plan"))
    args = parser.parse_args(argv)
    base = {**SETTINGS, **(QUICK if args.quick else {})}
    budgets = (30.0, 0.5) if args.quick else BUDGETS
    seeds = (0,) if args.quick else SEEDS
    if args.quick:
        path = args.out / "quick-acc.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("format,accuracy\nfp32,0.9\nint8,0.89\nint8-p2,0.8\nint8-p4,0.7\n")
        base["plan.accuracy"] = str(path)
    try:
        index: dict[str, dict] = {}
        with miet_fed.ray_session():
            for seed in seeds:
                planned = runs_for(seed, base, budgets)
                index[str(seed)] = planned["labels"]
                for name, overrides in planned["runs"].items():
                    run = args.out / "runs" / name
                    if (run / "summary.json").exists():
                        continue
                    miet_fed.simulate(overrides=overrides, out=run, quiet=True)
                    print(f"{run}: done", flush=True)
        (args.out / "runs.json").write_text(json.dumps(index, indent=1))
        table = summarise(args.out, index)
    except miet_fed.MietError as exc:
        print(f"payload_plan: error: {exc}", file=sys.stderr)
        return 2
    table.to_csv(args.out / "plan_vs_single.csv", index=False)
    cols = ["feature_MB", "max_download_s", "all", *GROUPS]
    over = table.groupby("label", sort=False)[cols].agg(["mean", "std"])
    print(over.round(3).to_string())
    print(table[["label", "seed", "formats"]].to_string(index=False))
    plot(table, args.out / "plan_vs_single.png")
    print(f"wrote {args.out / 'plan_vs_single.csv'} and plan_vs_single.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
