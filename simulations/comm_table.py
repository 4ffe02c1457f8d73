"""Study: bytes per image of every gather for three ViTs at 224 px (fp32, fp16, int8), no weights.

    .venv/bin/python simulations/comm_table.py [--out results/comm_table]

Writes comm_table.csv (one row per model x gather x dtype), comparisons.csv (raw image, weight
exchange of full fine-tuning and of the LAE edge network) and comm_table.md, then prints the
markdown. Numbers come from `miet-fed cost` (`miet_fed.comm.cost_cli`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from miet_fed.comm.cost_cli import (
    comparisons_frame,
    cost_report,
    display,
    header,
    rows_frame,
    to_markdown,
)
from miet_fed.files import write_text

MODELS = ("vit_small_patch14_dinov2", "vit_base_patch16_224", "vit_large_patch16_224")
IMG_SIZE = 224
DTYPES = ("fp32", "fp16", "int8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/comm_table"))
    out = parser.parse_args(argv).out
    reports = [cost_report(m, IMG_SIZE, dtypes=DTYPES) for m in MODELS]
    rows = pd.concat([rows_frame(r).assign(model=r["model"]) for r in reports])
    comps = pd.concat([comparisons_frame(r).assign(model=r["model"]) for r in reports])
    rows, comps = (f[["model", *f.columns[:-1]]] for f in (rows, comps))
    md = [f"# Communication cost per image at {IMG_SIZE} px (k = depth)", ""]
    for r in reports:
        name = r["model"]
        md += [f"## {name}", "", header(r), ""]
        md += [to_markdown(display(rows[rows.model == name].drop(columns="model"))), ""]
        md += [to_markdown(display(comps[comps.model == name].drop(columns="model"))), ""]
    text = "\n".join(md)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "comm_table.csv", rows.to_csv(index=False))
    write_text(out / "comparisons.csv", comps.to_csv(index=False))
    write_text(out / "comm_table.md", text)
    print(text)
    print(f"written: {out}/comm_table.csv, comparisons.csv, comm_table.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
