"""Gather ablation on one device (sum k=6/9/12, last, cls, all; fp32/fp16/int8), then its report.

    .venv/bin/python simulations/gather_ablation.py            # configs/sweep_gather.toml
    .venv/bin/python simulations/gather_ablation.py --quick    # smoke test: 100+100 images, 56 px
    .venv/bin/python simulations/gather_ablation.py --set train.epochs=10 --out results/x

A thin wrapper over `miet-fed sweep configs/sweep_gather.toml` and `miet-fed report`: the sweep
resumes (finished runs are skipped), and features are cached per gather setting, so a second
invocation with other training settings runs no backbone at all.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from miet_fed.errors import MietError  # noqa: E402
from miet_fed.report import make_report  # noqa: E402
from miet_fed.sweep import Sweep, add_set, load_sweep, run_sweep  # noqa: E402

CONFIG = ROOT / "configs" / "sweep_gather.toml"
#: --quick: 200 images at 56 px, 15 epochs: each point in seconds on 2 cores once cached.
QUICK_SET = {
    "data.n_train": 100,
    "data.n_test": 100,
    "model.img_size": 56,
    "train.epochs": 15,
}


def build(quick: bool, pairs: list[str]) -> Sweep:
    """The sweep of the config file, shrunk for --quick, with --set pairs on top."""
    sweep = load_sweep(CONFIG)
    if sweep.base is not None and not sweep.base.is_absolute() and not sweep.base.is_file():
        sweep = replace(sweep, base=ROOT / sweep.base)  # run from outside the checkout
    if quick:
        sweep = replace(sweep, name=f"{sweep.name}-quick", fixed={**sweep.fixed, **QUICK_SET})
    return add_set(sweep, pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny fast variant (smoke test)")
    parser.add_argument("--out", type=Path, help="sweep folder (default: results/<name>)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        sweep = build(args.quick, args.set)
        out = args.out or Path("results") / sweep.name
        points, outcomes = run_sweep(sweep, out, quiet=args.quiet)
        report = make_report(out)
    except MietError as exc:
        print(f"gather_ablation: error: {exc}", file=sys.stderr)
        return 2
    failed = [p.slug for p in points if outcomes[p.index].status == "failed"]
    print(f"sweep: {out} ({len(points)} runs, {len(failed)} failed)")
    print(f"report: {report}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
