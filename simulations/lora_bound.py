"""An upper bound that adapts inside the backbone: LoRA on every block's attention, on one device.

    .venv/bin/python simulations/lora_bound.py                  # seed 0, 10 epochs (~15 min)
    .venv/bin/python simulations/lora_bound.py --seed 1 --epochs 5
    .venv/bin/python simulations/lora_bound.py --quick          # tiny random ViT: a smoke test

MIET never runs a backward pass through the backbone: the device trains only the LAE on the
payload. This baseline does what MIET gives up: low-rank adapters (LoRA, rank r, B = 0 at the
start) on the qkv projection of every block of the same frozen DINOv2 ViT, trained end to end
with a head on [CLS, token mean] after the final norm, in one process. Same selection and protocol
as `miet-fed tune` (800 training + 200 validation images, the best validation epoch tested once on
1,000 test images). It is not a federated method (it would send the whole backbone's activations
or gradients), and it is not in CI: each epoch runs forward and backward through the ViT.
Writes results/lora_bound/seed_<seed>.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from benchmarks.edge_resources import lora_linear  # noqa: E402
from miet_fed.api import build  # noqa: E402
from miet_fed.cloud.backbone import build_backbone  # noqa: E402
from miet_fed.data import load_dataset  # noqa: E402
from miet_fed.errors import MietError  # noqa: E402
from miet_fed.results import write_json  # noqa: E402
from miet_fed.tuning import split_of  # noqa: E402

QUICK = {
    "model.name": "vit_tiny_patch16_224",
    "model.weights": "random",
    "model.img_size": 32,
    "data.n_train": 40,
    "data.n_val": 10,
    "data.n_test": 30,
}


class LoRAViT(nn.Module):
    """The frozen timm ViT with LoRA on each block's attn.qkv and a [CLS, mean] linear head."""

    def __init__(self, vit: nn.Module, num_classes: int, rank: int, alpha: float) -> None:
        super().__init__()
        for p in vit.parameters():
            p.requires_grad_(False)
        adapter = lora_linear()  # y = W x + (alpha / r) B A x, B = 0 at the start
        for block in vit.blocks:
            block.attn.qkv = adapter(block.attn.qkv, rank, alpha)
        self.vit = vit
        self.prefix = int(vit.num_prefix_tokens)
        self.head = nn.Linear(2 * vit.embed_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.vit.forward_features(x)  # after the final norm
        pooled = torch.cat([h[:, 0], h[:, self.prefix :].mean(dim=1)], dim=-1)
        return self.head(pooled)

    def trainable(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.named_parameters() if p.requires_grad}


@torch.no_grad()
def evaluate(net: LoRAViT, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[float, float]:
    net.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(y), batch):
        out = net(x[i : i + batch])
        loss += float(nn.functional.cross_entropy(out, y[i : i + batch], reduction="sum"))
        correct += int((out.argmax(-1) == y[i : i + batch]).sum())
    return loss / max(1, len(y)), correct / max(1, len(y))


def run(args: argparse.Namespace) -> dict:
    overrides = {"run.seed": args.seed, **(QUICK if args.quick else {})}
    cfg = build("tune", overrides=overrides)
    torch.manual_seed(args.seed)
    ds = load_dataset(cfg.data.dataset)
    split = split_of(cfg, ds.labels)
    bb = build_backbone(cfg.model.name, cfg.model.weights, cfg.model.img_size)
    data = {
        part: (bb.preprocess(ds.images[ids]), torch.from_numpy(ds.labels[ids]))
        for part, ids in (("train", split.train), ("val", split.val), ("test", split.test))
    }
    net = LoRAViT(bb.net, ds.num_classes, args.rank, args.alpha)
    params = net.trainable()
    opt = torch.optim.AdamW(params.values(), lr=args.lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed)
    x, y = data["train"]
    best = (-1.0, math.inf, 0, {})  # val acc, val loss, epoch, trainable state
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        net.train()
        order = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), args.batch):
            idx = order[i : i + args.batch]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        val_loss, val_acc = evaluate(net, *data["val"], args.batch)
        if (val_acc, -val_loss) > (best[0], -best[1]):
            state = {n: p.detach().clone() for n, p in params.items()}
            best = (val_acc, val_loss, epoch, state)
        print(
            f"epoch {epoch}/{args.epochs}: val_acc {val_acc:.4f}, "
            f"{time.perf_counter() - start:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(best[3][n])
    test_loss, test_acc = evaluate(net, *data["test"], args.batch)
    return {
        "method": "lora",
        "dataset": cfg.data.dataset,
        "model": cfg.model.name,
        "weights": cfg.model.weights,
        "img_size": cfg.model.img_size,
        "seed": args.seed,
        "rank": args.rank,
        "alpha": args.alpha,
        "epochs": args.epochs,
        "lr": args.lr,
        "n_train": len(split.train),
        "n_val": len(split.val),
        "n_test": len(split.test),
        "best_epoch": best[2],
        "val_acc": best[0],
        "test_acc": test_acc,
        "test_loss": test_loss,
        "trainable_params": sum(p.numel() for p in params.values()),
        "seconds": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="tiny random ViT (smoke test)")
    parser.add_argument("--out", type=Path, default=Path("results/lora_bound"))
    args = parser.parse_args(argv)
    try:
        summary = run(args)
    except MietError as exc:
        print(f"lora_bound: error: {exc}", file=sys.stderr)
        return 2
    path = args.out / f"seed_{args.seed}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, summary)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
