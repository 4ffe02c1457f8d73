"""`miet-fed cost`: what crosses the network per image, for every gather and dtype of a timm ViT
(and, with --token-pools / --proj-ranks, every payload format: pooled tokens, projected channels).

The backbone is built on the meta device (`describe_vit`), so any timm ViT works without weights,
and so is the edge network (`miet_fed.edge.networks.param_counts`): its parameter counts come
from the network itself, whatever network (a plugin's too, `--plugin`). Byte counts come from
`miet_fed.comm.cost`, the same formulas the ledger is tested against; the gathers are the
registered ones. The table is reusable: `cost_report` returns plain data,
`rows_frame`/`comparisons_frame` make tables.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from miet_fed.comm import cost
from miet_fed.config import EdgeConfig, ModelConfig
from miet_fed.errors import MietError
from miet_fed.units import human_bytes

HELP = "communication cost per image: every gather x dtype of a timm ViT (no weights needed)"

DTYPES = tuple(cost.DTYPE_BYTES)
_NUMERIC = {
    "k",
    "token_pool",
    "proj_rank",
    "bytes_per_image",
    "bytes",
    "params",
    "vs_raw_image",
    "vs_gather_star_fp32",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model, edge = ModelConfig(), EdgeConfig()
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    parser.add_argument("--model", default=model.name, help="any timm ViT (no weights needed)")
    parser.add_argument(
        "--img-size", dest="img_size", type=int, default=model.img_size, help="input resolution"
    )
    parser.add_argument("--k", type=int, default=None, help="gather z_0 .. z_k; None = the depth")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated wire dtypes")
    parser.add_argument(
        "--gathers", default=None, help="comma-separated gathers (default: every registered one)"
    )
    parser.add_argument(
        "--token-pools",
        dest="token_pools",
        default=str(model.token_pool),
        help="comma-separated model.token_pool values (p: average p x p patch blocks; 1 = none)",
    )
    parser.add_argument(
        "--proj-ranks",
        dest="proj_ranks",
        default=str(model.proj_rank),
        help="comma-separated model.proj_rank values (channels projected to r; 0 = none)",
    )
    parser.add_argument(
        "--edge",
        default=edge.name,
        help="edge network priced for weight exchange (on the first pool and rank listed)",
    )
    parser.add_argument(
        "--edge-gather",
        dest="edge_gather",
        default=None,
        help="payload the edge network reads; None = the one it declares (lae: sum, linear: "
        "cls, layerwise: all)",
    )
    parser.add_argument("--rank", type=int, default=edge.rank, help="edge attention rank")
    parser.add_argument("--blocks", type=int, default=edge.blocks, help="lae low-rank blocks")
    parser.add_argument("--heads", type=int, default=edge.heads, help="edge attention heads")
    parser.add_argument("--pool", default=edge.pool, help="edge pooling: cls, mean, cls+mean")
    parser.add_argument("--classes", type=int, default=10, help="classes of the edge head")
    parser.add_argument(
        "--json", action="store_true", help="print the report as one JSON line last"
    )
    from miet_fed.cli import add_plugin

    add_plugin(parser)


def _names(text: str, flag: str) -> list[str]:
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise MietError(f"{flag} is empty; give a comma-separated list")
    return names


def _ratio(num: int, den: int) -> float:
    return round(num / den, 6)


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(n) for n in _names(text, flag)]
    except ValueError:
        raise MietError(f"{flag} takes comma-separated integers, got {text!r}") from None


def _edge_params(
    edge: EdgeConfig,
    gather: str,
    dims: tuple[int, int, int],
    classes: int,
    fmt: tuple[int, int, int] = (1, 1, 0),
) -> dict[str, int]:
    """Edge parameter counts on `gather`'s payload for (tokens, dim, k), counted on the network
    built on the meta device; a clear error if it cannot read that payload."""
    from miet_fed.cloud.gather import get_gather
    from miet_fed.edge.networks import gathers_for, param_counts

    g = get_gather(gather)
    fits = gathers_for(edge.name)
    if gather not in fits:
        raise MietError(
            f"edge network '{edge.name}' cannot read the '{gather}' payload; "
            f"use --edge-gather {' or '.join(fits)}"
        )
    shape = cost.format_shape(g.payload_shape(*dims), g.kind, *fmt)
    return param_counts(edge.name, g.kind, shape, classes, edge)


def cost_report(
    model: str,
    img_size: int,
    k: int | None = None,
    dtypes: list[str] | tuple[str, ...] = DTYPES,
    gathers: list[str] | tuple[str, ...] | None = None,
    edge: EdgeConfig | None = None,
    classes: int = 10,
    edge_gather: str | None = None,
    token_pools: list[int] | tuple[int, ...] = (1,),
    proj_ranks: list[int] | tuple[int, ...] = (0,),
) -> dict[str, Any]:
    """Per-image payload bytes for each gather x pool x rank x dtype (the `cls` vector is not
    pooled: its rows are the unpooled ones), plus comparison rows (JSON-ready). The edge network
    is priced on the first pool and rank listed."""
    from miet_fed.cloud.gather import gather_names, get_gather
    from miet_fed.edge.networks import default_gather

    gathers = gather_names() if gathers is None else gathers
    for dtype in dtypes:
        cost.check_dtype(dtype)
    for gather in gathers:
        cost.gather_payload_shape(gather, 1, 1, 0)  # unknown names raise a MietError
    if img_size < 16:
        raise MietError(
            f"--img-size must be a positive number of pixels, at least the patch size "
            f"(e.g. 224), got {img_size}"
        )
    if classes < 1:
        raise MietError(f"--classes must be >= 1, got {classes}")
    edge = edge or EdgeConfig()
    edge_gather = edge_gather or default_gather(edge.name)
    _edge_params(edge, edge_gather, (2, 2, 1), classes)  # fail before building the ViT
    from miet_fed.cloud.backbone import describe_vit

    vit = describe_vit(model, img_size)
    depth, tokens, dim, prefix = vit["depth"], vit["tokens"], vit["dim"], vit["prefix"]
    k = depth if k is None else k
    if not 0 <= k <= depth:
        raise MietError(f"k={k} is out of range for '{model}' (depth {depth}): use 0..{depth}")
    raw = cost.raw_image_bytes(img_size, img_size, 3)
    star = cost.feature_bytes_per_image("sum", tokens, dim, k, "fp32")
    for pool in token_pools:  # a pool or rank the backbone cannot take: one line, no rows
        cost.gather_payload_shape("sum", tokens, dim, k, prefix, pool, 0)
    for rank in proj_ranks:
        cost.gather_payload_shape("sum", tokens, dim, k, prefix, 1, rank)
    rows = []
    for gather in gathers:
        vector = get_gather(gather).kind == "vector"
        for pool in [1] if vector else token_pools:
            for rank in proj_ranks:
                fmt = (prefix, pool, rank)
                shape = cost.gather_payload_shape(gather, tokens, dim, k, *fmt)
                for dtype in dtypes:
                    nbytes = cost.encoded_bytes(shape, dtype)
                    rows.append(
                        {
                            "gather": gather,
                            "dtype": dtype,
                            "k": k,
                            "token_pool": pool,
                            "proj_rank": rank,
                            "payload_shape": list(shape),
                            "bytes_per_image": nbytes,
                            "vs_raw_image": _ratio(nbytes, raw),
                            "vs_gather_star_fp32": _ratio(nbytes, star),
                        }
                    )
    edge_vector = get_gather(edge_gather).kind == "vector"
    edge_fmt = (prefix, 1 if edge_vector else token_pools[0], proj_ranks[0])
    edge_shape = cost.gather_payload_shape(edge_gather, tokens, dim, k, *edge_fmt)
    counts = _edge_params(edge, edge_gather, (tokens, dim, k), classes, edge_fmt)
    per_round = "client per round, down+up fp32"
    comparisons = [
        {"what": "raw image (uplink, uint8)", "bytes": raw, "per": "image", "params": None},
        {
            "what": "full fine-tuning weight exchange",
            "bytes": cost.weight_exchange_bytes(vit["params"], 1, 1),
            "per": per_round,
            "params": vit["params"],
        },
    ]
    for share in ("all", "body"):
        params = cost.shared_params(counts, share)
        comparisons.append(
            {
                "what": f"edge network weight exchange ({share})",
                "bytes": cost.weight_exchange_bytes(params, 1, 1),
                "per": per_round,
                "params": params,
            }
        )
    for row in comparisons:
        row["vs_gather_star_fp32"] = _ratio(row["bytes"], star)
    return {
        "model": model,
        "img_size": img_size,
        "tokens": tokens,
        "dim": dim,
        "depth": depth,
        "k": k,
        "backbone_params": vit["params"],
        "raw_image_bytes": raw,
        "gather_star_fp32_bytes": star,
        "edge": {
            "name": edge.name,
            "gather": edge_gather,
            "payload_shape": list(edge_shape),
            "classes": classes,
            "rank": edge.rank,
            "blocks": edge.blocks,
            "heads": edge.heads,
            "pool": edge.pool,
            "token_pool": edge_fmt[1],
            "proj_rank": edge_fmt[2],
            "params": counts,
        },
        "rows": rows,
        "comparisons": comparisons,
    }


def rows_frame(report: dict[str, Any]) -> Any:
    import pandas as pd

    frame = pd.DataFrame(report["rows"])
    for col in ("token_pool", "proj_rank"):  # shown only when a format was asked for
        if col in frame and frame[col].nunique() == 1 and frame[col].iloc[0] in (0, 1):
            frame = frame.drop(columns=col)
    frame["payload_shape"] = frame["payload_shape"].map(lambda s: "x".join(map(str, s)))
    at = list(frame.columns).index("bytes_per_image") + 1
    frame.insert(at, "size", frame["bytes_per_image"].map(human_bytes))
    return frame.rename(columns={"payload_shape": "payload"})


def comparisons_frame(report: dict[str, Any]) -> Any:
    import pandas as pd

    frame = pd.DataFrame(report["comparisons"])
    frame.insert(2, "size", frame["bytes"].map(human_bytes))
    frame["params"] = frame["params"].astype("Int64")
    return frame


def display(frame: Any) -> Any:
    """Thousands separators on counts, 3 significant digits on ratios (for reading, not parsing)."""
    import pandas as pd

    def ratio(x: float) -> str:
        return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"

    out = frame.copy()
    for col in out.columns:
        if col.startswith("vs_"):
            out[col] = out[col].map(ratio)
        elif col in ("bytes_per_image", "bytes", "params"):
            out[col] = out[col].map(lambda x: "" if pd.isna(x) else f"{int(x):,}")
    return out.astype(str)


def to_markdown(frame: Any) -> str:
    """A GitHub markdown table (pandas' own needs the optional `tabulate`)."""
    cols = [str(c) for c in frame.columns]
    lines = [
        "| " + " | ".join(cols) + " |",
        "|" + "|".join("---:" if c in _NUMERIC else "---" for c in cols) + "|",
    ]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def header(report: dict[str, Any]) -> str:
    r, e = report, report["edge"]
    return (
        f"{r['model']} @ {r['img_size']} px: {r['tokens']} tokens x {r['dim']}, "
        f"depth {r['depth']}, {r['backbone_params']:,} backbone params; k={r['k']}; "
        f"edge {e['name']} on the "
        f"{e['gather']} payload ({'x'.join(map(str, e['payload_shape']))}): "
        f"{e['params']['total']:,} params "
        f"(body {e['params']['body']:,}, head {e['params']['head']:,})"
    )


def run(args: argparse.Namespace) -> int:
    dtypes = _names(args.dtypes, "--dtypes")
    from miet_fed.plugins import load_plugins

    load_plugins(args.plugin)
    gathers = _names(args.gathers, "--gathers") if args.gathers else None
    pools, ranks = _ints(args.token_pools, "--token-pools"), _ints(args.proj_ranks, "--proj-ranks")
    edge = EdgeConfig(
        name=args.edge, rank=args.rank, blocks=args.blocks, heads=args.heads, pool=args.pool
    )
    report = cost_report(
        args.model,
        args.img_size,
        args.k,
        dtypes,
        gathers,
        edge=edge,
        classes=args.classes,
        edge_gather=args.edge_gather,
        token_pools=pools,
        proj_ranks=ranks,
    )
    print(header(report))
    print(display(rows_frame(report)).to_string(index=False))
    print()
    print(display(comparisons_frame(report)).to_string(index=False))
    if args.json:
        print(json.dumps(report))
    return 0
