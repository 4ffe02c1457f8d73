"""`edge_resources`: what the device needs to train LAE vs LoRA-in-backbone vs full fine-tuning.

Each method is measured in its own fresh Python process (`python -m benchmarks.edge_resources
--child METHOD --size SIZE`, one JSON line out), so one method's memory never hides another's.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.jobs import REAL, TINY
from benchmarks.machine import apply_threads, child_env, reset_peak_rss, status_kib
from benchmarks.report import Report, ratio

DESCRIPTION = (
    "Device-side cost of one training step: MIET's LAE on the Gather* payload vs rank-8 LoRA on "
    "qkv of every backbone block (backbone otherwise frozen; LoRA and head trained) vs full "
    "fine-tuning of the backbone. Trainable parameters, forward+backward FLOPs per image "
    "(torch.utils.flop_counter), peak training memory (peak RSS above the RSS before the first "
    "step, each method in a fresh process) and step time (AdamW, batch as set) on this CPU. "
    "Backbone weights are random: cost does not depend on their values."
)

SIZES = {
    "quick": {"model": TINY, "batch": 8, "warmup": 1, "steps": 2, "min_seconds": 0.5},
    "default": {
        "model": {**REAL, "weights": "random"},
        "batch": 32,
        "warmup": 1,
        "steps": 3,
        "min_seconds": 3.0,
    },
    "large": {
        "model": {**REAL, "weights": "random"},
        "batch": 32,
        "warmup": 2,
        "steps": 8,
        "min_seconds": 10.0,
    },
}
MAX_STEPS = 2000  # cheap networks repeat until min_seconds of timed steps, at most this many
METHODS = ("lae", "lora", "full")
CLASSES = 10  # animal-mnist
LORA_RANK, LORA_ALPHA = 8, 16.0


# --------------------------------------------------------------------------- child process


def lora_linear() -> type:
    import torch
    from torch import nn

    class LoRALinear(nn.Module):
        """y = W x + (alpha / r) B A x, W frozen, A random, B zero (LoRA, Hu et al. 2021).
        Also the adapter of simulations/lora_bound.py (LoRA inside the backbone)."""

        def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
            super().__init__()
            self.base = base
            self.lora_a = nn.Parameter(torch.empty(rank, base.in_features))
            self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
            nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
            self.scale = alpha / rank

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.base(x) + (x @ self.lora_a.t() @ self.lora_b.t()) * self.scale

    return LoRALinear


def _vit(model: dict[str, Any]) -> Any:
    from miet_fed._compat import import_timm

    timm = import_timm()
    return timm.create_model(
        model["name"], pretrained=False, num_classes=CLASSES, img_size=model["img_size"]
    )


def build(method: str, model: dict[str, Any], batch: int) -> tuple[Any, Any, Any]:
    """(network, input batch, labels) of one method; only trainable tensors require grad."""
    import torch

    torch.manual_seed(0)
    y = torch.randint(0, CLASSES, (batch,))
    if method == "lae":
        from miet_fed.cloud.service import payload_info
        from miet_fed.config import EdgeConfig, ModelConfig
        from miet_fed.edge.networks import build_edge_network

        cfg = ModelConfig(name=model["name"], weights="random", img_size=model["img_size"])
        kind, shape, _ = payload_info(cfg)
        net = build_edge_network("lae", kind, shape, CLASSES, EdgeConfig())
        return net, torch.randn(batch, *shape), y
    net = _vit(model)
    x = torch.randn(batch, 3, model["img_size"], model["img_size"])
    if method == "lora":
        lora = lora_linear()
        net.requires_grad_(False)
        for block in net.blocks:
            block.attn.qkv = lora(block.attn.qkv, LORA_RANK, LORA_ALPHA)
        net.get_classifier().requires_grad_(True)
    return net, x, y


def flops_per_image(net: Any, x: Any, y: Any) -> tuple[float, float]:
    """(forward, forward+backward) FLOPs per image, as counted by FlopCounterMode."""
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fwd:
        loss = F.cross_entropy(net(x), y)
    with FlopCounterMode(display=False) as bwd:
        loss.backward()
    net.zero_grad(set_to_none=True)
    n = x.shape[0]
    return fwd.get_total_flops() / n, (fwd.get_total_flops() + bwd.get_total_flops()) / n


def cloud_forward_flops(model: dict[str, Any]) -> float:
    """FLOPs per image of the cloud's gathered forward (runs in the cloud under MIET)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from miet_fed.cloud.backbone import build_backbone
    from miet_fed.cloud.gather import get_gather
    from miet_fed.config import ModelConfig

    cfg = ModelConfig(name=model["name"], weights="random", img_size=model["img_size"])
    backbone = build_backbone(cfg.name, "random", cfg.img_size)
    x = torch.randn(2, 3, cfg.img_size, cfg.img_size)
    with FlopCounterMode(display=False) as fc:
        get_gather(cfg.gather)(backbone.token_maps(x, cfg.k))
    return fc.get_total_flops() / 2


def child(method: str, size: str) -> dict[str, Any]:
    """Measure one method in this (fresh) process."""
    import torch
    import torch.nn.functional as F

    apply_threads()
    s = SIZES[size]
    net, x, y = build(method, s["model"], s["batch"])
    trainable = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-3)
    net.train()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()

    rss_before = status_kib("VmRSS")
    reset = reset_peak_rss()
    for _ in range(s["warmup"]):
        step()
    times: list[float] = []
    while len(times) < s["steps"] or (sum(times) < s["min_seconds"] and len(times) < MAX_STEPS):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = status_kib("VmHWM")
    fwd, fwd_bwd = flops_per_image(net, x, y)
    out = {
        "method": method,
        "trainable_params": sum(p.numel() for p in trainable),
        "total_params": sum(p.numel() for p in net.parameters()),
        "input_shape": list(x.shape),
        "fwd_flops_per_image": fwd,
        "fwd_bwd_flops_per_image": fwd_bwd,
        "step_seconds_median": statistics.median(times),
        "step_seconds_all": times if len(times) <= 20 else None,
        "timed_steps": len(times),
        "rss_before_steps_bytes": rss_before * 1024,
        "peak_rss_bytes": peak * 1024,
        "peak_training_memory_bytes": (peak - rss_before) * 1024 if reset else None,
        "peak_reset_ok": reset,
        "param_grad_adam_bytes": 4 * sum(p.numel() for p in trainable) * 3,
        "torch_threads": torch.get_num_threads(),
    }
    if method == "lae":
        out["cloud_forward_flops_per_image"] = cloud_forward_flops(s["model"])
    return out


# --------------------------------------------------------------------------- parent


def _run_child(method: str, size: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.edge_resources", "--child", method, "--size", size]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=child_env())
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(size: str, work: Path) -> Report:
    s = SIZES[size]
    rep = Report("edge_resources", DESCRIPTION)
    rep.settings = {
        "backbone": s["model"]["name"],
        "img_size": s["model"]["img_size"],
        "weights": "random",
        "batch": s["batch"],
        "timed_steps": f">= {s['steps']} and >= {s['min_seconds']:g} s",
        "lae": "EdgeConfig defaults (2 blocks, rank 32, 4 heads, cls+mean) on Gather* k=12",
        "lora": f"rank {LORA_RANK}, alpha {LORA_ALPHA:g}, on attn.qkv of every block, + head",
        "optimizer": "AdamW",
    }
    res = {m: _run_child(m, size) for m in METHODS}
    rep.figures = {m: r for m, r in res.items()}
    labels = {
        "lae": "MIET LAE (edge)",
        "lora": "LoRA r8 in backbone",
        "full": "full fine-tuning",
    }
    for m in METHODS:
        r = res[m]
        mem = r["peak_training_memory_bytes"]
        rep.rows.append(
            {
                "method": labels[m],
                "trainable params": r["trainable_params"],
                "fwd+bwd GFLOP/image": r["fwd_bwd_flops_per_image"] / 1e9,
                "peak training memory MiB": None if mem is None else mem / 2**20,
                "peak RSS MiB": r["peak_rss_bytes"] / 2**20,
                f"step s (batch {s['batch']})": r["step_seconds_median"],
            }
        )
    lae = res["lae"]
    rep.rows.append(
        {
            "method": "cloud Gather* forward (MIET, in the cloud)",
            "trainable params": 0,
            "fwd+bwd GFLOP/image": lae["cloud_forward_flops_per_image"] / 1e9,
        }
    )
    for base in ("lora", "full"):
        r = res[base]
        for key, what in (
            ("fwd_bwd_flops_per_image", "fwd+bwd FLOPs"),
            ("peak_training_memory_bytes", "peak training memory"),
            ("step_seconds_median", "step time"),
        ):
            q = ratio(r[key], lae[key])
            rep.check(
                f"{base} / LAE {what}",
                q,
                ">= 10 (proposed)",
                None if q is None else q >= 10,
            )
        q = ratio(r["trainable_params"], lae["trainable_params"])
        rep.check(f"{base} / LAE trainable params", q, "(reported)", None)
    rep.notes += [
        "FLOPs: torch.utils.flop_counter.FlopCounterMode counts matmuls, convolutions and "
        "attention (SDPA); norms, softmax outside SDPA, GELU and the optimizer are not counted.",
        "Peak training memory: each method runs in a fresh process; after building the network, "
        "batch and optimizer the peak RSS is reset (/proc/self/clear_refs 5), the warm-up and "
        "timed steps run, and the figure is VmHWM minus the RSS before the first step (so it "
        "covers activations, gradients, AdamW state and allocator slack; not the weights or "
        "torch itself). tracemalloc does not see torch's allocations.",
        f"Step time: median over timed steps after {s['warmup']} warm-up step(s): at least "
        f"{s['steps']}, repeated until {s['min_seconds']:g} s of steps (LAE: "
        f"{lae['timed_steps']} steps), {lae['torch_threads']} torch threads.",
    ]
    if not all(r["peak_reset_ok"] for r in res.values()):
        rep.notes.append("peak RSS could not be reset on this system: memory figures omitted")
    return rep


def main() -> None:
    p = argparse.ArgumentParser(description="one edge_resources measurement (internal)")
    p.add_argument("--child", choices=METHODS, required=True)
    p.add_argument("--size", choices=tuple(SIZES), default="default")
    args = p.parse_args()
    print(json.dumps(child(args.child, args.size)))


if __name__ == "__main__":
    main()
