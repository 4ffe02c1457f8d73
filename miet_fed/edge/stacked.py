"""Many devices' edge networks trained as one stacked computation.

Every parameter gets a leading device axis [C, ...]; the networks' `forward_stacked` runs all C
devices' batches [C, B, ...] at once with batched matmuls (a hand-written batched form: on CPU,
`torch.func.vmap` over `functional_call` measured 4x slower than a plain loop, because scaled
dot-product attention and the backward of batched LayerNorm fall back to per-sample kernels).

Each device keeps its own data order (its own generator, consumed exactly as `train.fit` does),
its own AdamW state and step count, and its own number of batches: a device with fewer batches is
masked out of the steps it does not take, so its parameters and optimizer state do not move.
The result equals `train.fit` on each device within float tolerance (tests compare the two).
Nothing here knows about Flower.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from miet_fed.comm import codec
from miet_fed.edge.train import Optim

State = dict[str, torch.Tensor]  # parameter name -> stacked tensor [C, ...]

# --- batched building blocks (networks compose them in `forward_stacked`) ---------------------


def s_linear(x: torch.Tensor, p: State, prefix: str) -> torch.Tensor:
    """x [C, ..., I], weight [C, O, I], bias [C, O] -> [C, ..., O]."""
    shape = x.shape
    flat = x.reshape(shape[0], -1, shape[-1])
    out = torch.baddbmm(p[prefix + ".bias"].unsqueeze(1), flat, p[prefix + ".weight"].mT)
    return out.view(*shape[:-1], -1)


def s_layer_norm(x: torch.Tensor, p: State, prefix: str, eps: float = 1e-5) -> torch.Tensor:
    view = (x.shape[0],) + (1,) * (x.dim() - 2) + (-1,)
    normed = F.layer_norm(x, (x.shape[-1],), eps=eps)
    return torch.addcmul(p[prefix + ".bias"].view(view), normed, p[prefix + ".weight"].view(view))


def s_affine_linear(
    z: torch.Tensor, gain: torch.Tensor, shift: torch.Tensor, p: State, prefix: str
) -> torch.Tensor:
    """`s_linear` of `z * gain + shift` (gain, shift [C, I]), with the affine folded into the
    weights: W' = W diag(gain), b' = b + W shift. Parameter-sized work instead of two
    activation-sized passes (forward and backward), which dominated the stacked step on CPU."""
    weight = p[prefix + ".weight"]
    folded = {
        prefix + ".weight": weight * gain.unsqueeze(1),
        prefix + ".bias": torch.baddbmm(
            p[prefix + ".bias"].unsqueeze(2), weight, shift.unsqueeze(2)
        ).squeeze(2),
    }
    return s_linear(z, folded, prefix)


def s_norm_linear(
    x: torch.Tensor, p: State, norm: str, linear: str, eps: float = 1e-5
) -> torch.Tensor:
    """`s_linear(s_layer_norm(x, norm), linear)`, the norm's affine folded into the linear."""
    normed = F.layer_norm(x, (x.shape[-1],), eps=eps)
    return s_affine_linear(normed, p[norm + ".weight"], p[norm + ".bias"], p, linear)


def s_norm_pool_linear(
    x: torch.Tensor, p: State, norm: str, pool: Callable[[torch.Tensor], torch.Tensor], linear: str
) -> torch.Tensor:
    """`linear(pool(layer_norm(x)))` for a pool that is linear over tokens (CLS, mean or both
    concatenated): the norm's affine commutes with it and folds into the linear."""
    pooled = pool(F.layer_norm(x, (x.shape[-1],), eps=1e-5))
    reps = pooled.shape[-1] // x.shape[-1]
    gain, shift = p[norm + ".weight"].repeat(1, reps), p[norm + ".bias"].repeat(1, reps)
    return s_affine_linear(pooled, gain, shift, p, linear)


def s_low_rank_attention(x: torch.Tensor, p: State, prefix: str, heads: int) -> torch.Tensor:
    """`LowRankAttention` for [C, B, T, D]; attention itself runs on the flattened C*B batch."""
    c, b, t, _ = x.shape
    qkv = s_norm_linear(x, p, prefix + ".norm", prefix + ".qkv")
    qkv = qkv.view(c * b, t, 3, heads, -1).permute(2, 0, 3, 1, 4)
    a = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
    return x + s_linear(a.transpose(1, 2).reshape(c, b, t, -1), p, prefix + ".up")


# --- stacking states --------------------------------------------------------------------------


def stack(states: Sequence[State], device: torch.device | str = "cpu") -> State:
    return {k: torch.stack([s[k] for s in states]).to(device) for k in states[0]}


def unstack(state: State, n: int) -> list[State]:
    """Per-device states, back on the CPU (where the device store keeps them)."""
    return [{k: v[i].to("cpu", copy=True) for k, v in state.items()} for i in range(n)]


def stackable(net: nn.Module) -> bool:
    """A network runs stacked when it has a batched forward and no buffers (running stats)."""
    return hasattr(net, "forward_stacked") and not list(net.buffers())


# --- per-device data, padded ------------------------------------------------------------------


def _gather(
    parts: Sequence[dict[str, torch.Tensor]], idx: Sequence[torch.Tensor | None], width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each device's selected payloads decoded and padded to `width`: x [C, width, ...] and a
    mask [C, width] (1 for real samples). A device with `None` takes no step (all padding)."""
    first = codec.decode(codec.select(parts[0], slice(0, 1)))
    x = first.new_zeros((len(parts), width, *first.shape[1:]))
    mask = torch.zeros(len(parts), width)
    for i, (p, ix) in enumerate(zip(parts, idx, strict=True)):
        if ix is None or len(ix) == 0:
            continue
        x[i, : len(ix)] = codec.decode(codec.select(p, ix))
        mask[i, : len(ix)] = 1.0
    return x, mask


def _pad_labels(labels: Sequence[torch.Tensor], idx: Sequence[torch.Tensor | None], width: int):
    y = torch.zeros(len(labels), width, dtype=torch.long)
    for i, (lab, ix) in enumerate(zip(labels, idx, strict=True)):
        if ix is not None and len(ix):
            y[i, : len(ix)] = lab[ix]
    return y


# --- AdamW with a device axis -----------------------------------------------------------------


class StackedAdamW:
    """torch.optim.AdamW (betas 0.9/0.999, eps 1e-8, decoupled decay) with per-device step
    counts; `step(active)` moves only the devices whose mask entry is true.

    While every device steps with the same learning rate and step count (the common case:
    devices of one size, a constant or equally long schedule), the step is torch's own fused
    AdamW over the stacked tensors, which is elementwise and so the same per device (profile of
    a 500-device node, one CPU thread: 32 steps took 0.07 s against 0.55 s in the masked form).
    Both paths update the same moment tensors in place, so a fit may switch between them.
    """

    def __init__(self, params: dict[str, torch.Tensor], lr: torch.Tensor, wd: float) -> None:
        self.params, self.wd = params, wd
        self.lr = lr  # [C]: per-device learning rate (a schedule may change it per step)
        self.m = {k: torch.zeros_like(v) for k, v in params.items()}
        self.v = {k: torch.zeros_like(v) for k, v in params.items()}
        self.steps = torch.zeros(len(lr), device=lr.device)
        tensors = list(params.values())
        self._fused = torch.optim.AdamW(tensors, lr=1.0, weight_decay=wd, fused=_can_fuse(tensors))
        for k, p in params.items():
            self._fused.state[p] = {
                "step": torch.zeros((), device=p.device),
                "exp_avg": self.m[k],
                "exp_avg_sq": self.v[k],
            }

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        for p in self.params.values():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if bool(active.all()) and _uniform(self.lr) and _uniform(self.steps):
            self._step_uniform()
        else:
            self._step_masked(active)
        for p in self.params.values():
            p.grad = None

    def _step_uniform(self) -> None:
        """Every device takes the same step: torch's fused AdamW on the stacked tensors."""
        self.steps += 1.0
        for state in self._fused.state.values():
            state["step"].fill_(float(self.steps[0]) - 1.0)  # torch increments it before use
        self._fused.param_groups[0]["lr"] = float(self.lr[0])
        self._fused.step()

    def _step_masked(self, active: torch.Tensor) -> None:
        b1, b2, eps = 0.9, 0.999, 1e-8
        self.steps += active.float()
        t = self.steps.clamp_min(1.0)
        step_size = self.lr / (1 - b1**t)
        bc2_sqrt = torch.sqrt(1 - b2**t)
        for k, p in self.params.items():
            g = p.grad
            view = (-1,) + (1,) * (p.dim() - 1)
            on = active.view(view)
            m = torch.where(on, self.m[k].lerp(g, 1 - b1), self.m[k])
            v = torch.where(on, self.v[k] * b2 + (1 - b2) * g * g, self.v[k])
            decayed = p * (1 - self.lr.view(view) * self.wd)
            new = decayed - step_size.view(view) * m / (v.sqrt() / bc2_sqrt.view(view) + eps)
            p.copy_(torch.where(on, new, p))
            self.m[k].copy_(m)  # in place: the fused path holds the same tensors
            self.v[k].copy_(v)


def _uniform(x: torch.Tensor) -> bool:
    return bool((x == x[0]).all())


def _can_fuse(tensors: list[torch.Tensor]) -> bool:
    """torch's fused AdamW takes floating tensors on CPU or CUDA (not MPS before 2.x, not
    float64 on every backend): fall back to its default (foreach) implementation elsewhere."""
    return all(t.dtype in (torch.float32, torch.float16, torch.bfloat16) for t in tensors) and all(
        t.device.type in ("cpu", "cuda") for t in tensors
    )


# --- fit and evaluate -------------------------------------------------------------------------


def fit_stacked(
    net: nn.Module,
    state: State,
    parts: Sequence[dict[str, torch.Tensor]],
    labels: Sequence[torch.Tensor],
    optim: Optim,
    generators: Sequence[torch.Generator],
    train_keys: Sequence[str] | None = None,
    prox: tuple[dict[str, torch.Tensor], float] | None = None,
) -> tuple[State, list[tuple[float, float]]]:
    """`train.fit` for C devices at once: returns the trained stacked state and each device's
    (mean loss, accuracy) of its last epoch. `state` holds every parameter of `net`, stacked."""
    c = len(labels)
    sizes = [len(y) for y in labels]
    if min(sizes) == 0:
        raise ValueError("fit: a device has no training samples")
    dev = next(iter(state.values())).device
    keys = list(train_keys) if train_keys is not None else list(state)
    trainable = {k: state[k].detach().clone().requires_grad_(True) for k in keys}
    frozen = {k: v.detach() for k, v in state.items() if k not in trainable}
    n_batches = [math.ceil(n / optim.batch_size) for n in sizes]
    total_steps = torch.tensor(
        [optim.epochs * nb for nb in n_batches], dtype=torch.float32, device=dev
    )
    lr0 = torch.full((c,), float(optim.lr), device=dev)
    opt = StackedAdamW(trainable, lr0.clone(), optim.weight_decay)
    ref = None
    if prox is not None and prox[1] > 0:
        ref = {k: v.detach().to(dev) for k, v in prox[0].items() if k in state}
    width = min(optim.batch_size, max(sizes))
    last = [(math.nan, math.nan)] * c
    for _ in range(optim.epochs):
        # The same generator calls as `train._batches`, device by device.
        orders = [
            torch.randperm(n, generator=g).split(optim.batch_size)
            for n, g in zip(sizes, generators, strict=True)
        ]
        loss_sum, correct, seen = (torch.zeros(c, device=dev) for _ in range(3))
        for s in range(max(n_batches)):
            idx = [o[s] if s < len(o) else None for o in orders]
            x, mask = (t.to(dev) for t in _gather(parts, idx, width))
            y = _pad_labels(labels, idx, width).to(dev)
            active = mask.sum(1) > 0
            params = {**frozen, **trainable}
            logits = net.forward_stacked(params, x)
            ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(c, -1)
            count = mask.sum(1)
            per_device = (ce * mask).sum(1) / count.clamp_min(1.0)
            if ref is not None:
                per_device = per_device + 0.5 * prox[1] * sum(
                    ((params[k] - r.unsqueeze(0)) ** 2).flatten(1).sum(1) for k, r in ref.items()
                )
            per_device.sum().backward()
            opt.step(active)
            if optim.schedule == "cosine":
                t = opt.steps.clamp(max=total_steps)
                opt.lr = 0.5 * lr0 * (1 + torch.cos(math.pi * t / total_steps))
            with torch.no_grad():
                loss_sum += per_device.detach() * count
                correct += ((logits.argmax(-1) == y).float() * mask).sum(1)
                seen += count
        last = list(zip((loss_sum / seen).tolist(), (correct / seen).tolist(), strict=True))
    out = {k: v.detach() for k, v in {**frozen, **trainable}.items()}
    return {k: out[k] for k in state}, last


@torch.inference_mode()
def evaluate_stacked(
    net: nn.Module,
    state: State,
    parts: Sequence[dict[str, torch.Tensor]],
    labels: Sequence[torch.Tensor],
    batch_size: int = 256,
) -> list[tuple[float, float]]:
    """`train.evaluate` for C devices at once: each device's (mean loss, accuracy)."""
    c = len(labels)
    sizes = [len(y) for y in labels]
    dev = next(iter(state.values())).device
    loss_sum, correct = torch.zeros(c, device=dev), torch.zeros(c, device=dev)
    for start in range(0, max(sizes, default=0), batch_size):
        idx = [
            torch.arange(start, min(n, start + batch_size)) if n > start else None for n in sizes
        ]
        width = max(len(i) for i in idx if i is not None)
        x, mask = (t.to(dev) for t in _gather(parts, idx, width))
        y = _pad_labels(labels, idx, width).to(dev)
        logits = net.forward_stacked(state, x)
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(c, -1)
        loss_sum += (ce * mask).sum(1)
        correct += ((logits.argmax(-1) == y).float() * mask).sum(1)
    return [
        (ls / n, cr / n) if n else (math.nan, math.nan)
        for ls, cr, n in zip(loss_sum.tolist(), correct.tolist(), sizes, strict=True)
    ]
