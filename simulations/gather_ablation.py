"""Gather ablation on one device (sum k=6/9/12, last, cls, all; fp32/fp16/int8), then its report.

    .venv/bin/python simulations/gather_ablation.py            # configs/sweep_gather.toml
    .venv/bin/python simulations/gather_ablation.py --quick    # smoke: 100 (20 val) + 100 images
    .venv/bin/python simulations/gather_ablation.py --set train.epochs=10 --out results/x

A thin wrapper over `miet-fed sweep configs/sweep_gather.toml` and `miet-fed report`: the sweep
resumes (finished runs are skipped), and features are cached per gather setting, so a second
invocation with other training settings runs no backbone at all.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from miet_fed import study  # noqa: E402

CONFIG = ROOT / "configs" / "sweep_gather.toml"
#: --quick: 200 images at 56 px, 15 epochs: each point in seconds on 2 cores once cached.
QUICK_SET = {
    "data.n_train": 100,
    "data.n_val": 20,  # VTAB-1K's share: a fifth of the selection validates
    "data.n_test": 100,
    "model.img_size": 56,
    "train.epochs": 15,
}


def main(argv: list[str] | None = None) -> int:
    return study.main("gather_ablation", __doc__.split("\n")[0], CONFIG, QUICK_SET, None, argv)


if __name__ == "__main__":
    sys.exit(main())
