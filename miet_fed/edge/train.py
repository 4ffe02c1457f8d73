"""Training and evaluating an edge network on cached payloads: what the device itself runs.

The payload stays in its wire encoding in memory (fp16/int8 take less device memory) and is
decoded one batch at a time. Nothing here knows about Flower or the backbone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from miet_fed.comm import codec


@dataclass(frozen=True)
class Optim:
    """Optimiser settings for one call of `fit`."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    schedule: str = "cosine"  # "cosine" over the call's steps, or "constant"


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> Iterable[torch.Tensor]:
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    yield from order.split(batch_size)


def fit(
    net: nn.Module,
    parts: dict[str, torch.Tensor],
    labels: torch.Tensor,
    optim: Optim,
    generator: torch.Generator,
    params: Iterable[nn.Parameter] | None = None,
    prox: tuple[dict[str, torch.Tensor], float] | None = None,
    on_epoch: Callable[[int, float, float], bool | None] | None = None,
) -> tuple[float, float]:
    """Train `net` in place; returns (mean loss, accuracy) of the last epoch trained.

    params: the subset to train (FedRep/FedBABU train part of the network); default all.
    prox: (reference state, mu) adds mu/2 * ||w - w_ref||^2 (FedProx, Ditto).
    on_epoch(epoch, loss, acc) after every epoch; returning True stops training there (tune's
    early stopping). The learning-rate schedule still spans `optim.epochs`.
    """
    n = len(labels)
    if n == 0:
        raise ValueError("fit: no training samples")
    trainable = [p for p in (params if params is not None else net.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=optim.lr, weight_decay=optim.weight_decay)
    steps = optim.epochs * math.ceil(n / optim.batch_size)
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        if optim.schedule == "cosine"
        else None
    )
    ref = None
    if prox is not None and prox[1] > 0:
        named = dict(net.named_parameters())
        ref = [(named[k], v.detach()) for k, v in prox[0].items() if k in named]
    loss_fn = nn.CrossEntropyLoss()
    net.train()
    last = (math.nan, math.nan)
    for epoch in range(optim.epochs):
        total, correct, loss_sum = 0, 0, 0.0
        for idx in _batches(n, optim.batch_size, generator):
            x = codec.decode(codec.select(parts, idx))
            y = labels[idx]
            logits = net(x)
            loss = loss_fn(logits, y)
            if ref is not None:
                loss = loss + 0.5 * prox[1] * sum(((p - r) ** 2).sum() for p, r in ref)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            loss_sum += loss.item() * len(idx)
            correct += (logits.argmax(-1) == y).sum().item()
            total += len(idx)
        last = (loss_sum / total, correct / total)
        if on_epoch is not None and on_epoch(epoch, *last):
            break
    net.eval()
    return last


def evaluate(
    net: nn.Module, parts: dict[str, torch.Tensor], labels: torch.Tensor, batch_size: int = 256
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `net` on the payloads; (nan, nan) for no samples."""
    return evaluate_many(net, [parts], [labels], batch_size)[0]


@torch.inference_mode()
def evaluate_many(
    net: nn.Module,
    parts: list[dict[str, torch.Tensor]],
    labels: list[torch.Tensor],
    batch_size: int = 256,
) -> list[tuple[float, float]]:
    """`evaluate` for several devices that hold the same model (FedAvg's personal accuracy of
    the global model): their samples share batches, and each device gets its own (mean loss,
    accuracy). A thousand devices with one test image each cost one forward of a thousand
    images, not a thousand forwards or a stack of a thousand copies of the model."""
    sizes = [len(y) for y in labels]
    loss_sum = torch.zeros(len(sizes), dtype=torch.float64)
    correct = torch.zeros(len(sizes), dtype=torch.float64)
    net.eval()

    def run(batch: list[tuple[int, torch.Tensor]]) -> None:
        x = torch.cat([codec.decode(codec.select(parts[i], idx)) for i, idx in batch])
        y = torch.cat([labels[i][idx] for i, idx in batch])
        owner = torch.cat([torch.full((len(idx),), i) for i, idx in batch])
        logits = net(x)
        ce = nn.functional.cross_entropy(logits, y, reduction="none")
        loss_sum.index_add_(0, owner, ce.double())
        correct.index_add_(0, owner, (logits.argmax(-1) == y).double())

    batch: list[tuple[int, torch.Tensor]] = []
    count = 0
    for i, n in enumerate(sizes):
        for idx in torch.arange(n).split(batch_size):
            if batch and count + len(idx) > batch_size:
                run(batch)
                batch, count = [], 0
            batch.append((i, idx))
            count += len(idx)
    if batch:
        run(batch)
    return [
        (ls / n, cr / n) if n else (math.nan, math.nan)
        for ls, cr, n in zip(loss_sum.tolist(), correct.tolist(), sizes, strict=True)
    ]
