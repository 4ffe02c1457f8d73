"""The cost model is pure arithmetic: checked against the paper's worked numbers, without torch;
edge parameter counts come from the networks themselves (meta device)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from miet_fed.comm import cost
from miet_fed.errors import MietError


def test_paper_numbers_vit_b16_224():
    tokens = cost.vit_token_count(224, 16)
    assert tokens == 197
    assert cost.feature_bytes_per_image("sum", tokens, 768, 12, "fp32") == 605_184
    assert cost.feature_bytes_per_image("sum", tokens, 768, 12, "fp16") == 302_592
    assert cost.feature_bytes_per_image("all", tokens, 768, 12, "fp32") == 7_867_392
    assert cost.feature_bytes_per_image("cls", tokens, 768, 12, "fp32") == 3_072
    assert cost.raw_image_bytes(224, 224, 3) == 150_528


def test_gather_star_is_one_map_for_any_k():
    sizes = {cost.feature_bytes_per_image("sum", 65, 384, k, "fp32") for k in range(13)}
    assert sizes == {65 * 384 * 4}
    assert cost.feature_bytes_per_image("all", 65, 384, 3, "fp32") == 4 * 65 * 384 * 4


def test_int8_counts_one_scale_per_token():
    assert cost.encoded_bytes((65, 384), "int8") == 65 * 384 + 65 * 4
    assert cost.encoded_bytes((384,), "int8") == 384 + 4


def test_weight_exchange_fedpara_convention():
    assert cost.weight_exchange_bytes(1000, participants=10, rounds=5) == 2 * 10 * 1000 * 4 * 5


def test_unknown_dtype_is_a_user_error():
    with pytest.raises(MietError, match="valid: fp32, fp16, bf16, int8"):
        cost.encoded_bytes((3,), "fp8")


def test_cost_module_does_not_import_torch():
    code = (
        "import sys, miet_fed.comm.cost as c; c.feature_bytes_per_image('all',5,4,2,'fp16'); "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---- Edge network parameter counts: counted on the meta device, equal to the real modules -----

EDGE_CASES = [
    ("lae", (65, 384), 10, 32, 2, 4, "cls+mean"),
    ("lae", (197, 768), 100, 64, 3, 8, "mean"),
    ("lae", (5, 16), 2, 4, 0, 2, "cls"),
    ("linear", (65, 384), 10, 32, 2, 4, "cls+mean"),
    ("linear", (65, 384), 7, 32, 2, 4, "cls"),
    ("linear", (384,), 10, 32, 2, 4, "cls+mean"),  # vector payload: no pooling
    ("layerwise", (13, 65, 384), 10, 32, 2, 4, "cls+mean"),
    ("layerwise", (1, 9, 24), 3, 8, 2, 2, "mean"),  # k=0: one map, no block
    ("layerwise", (4, 17, 48), 5, 12, 1, 3, "cls"),
]


@pytest.mark.parametrize("case", EDGE_CASES, ids=lambda c: f"{c[0]}-{'x'.join(map(str, c[1]))}")
def test_meta_param_counts_match_torch_networks(case):
    from miet_fed.config import EdgeConfig
    from miet_fed.edge.networks import build_edge_network, param_counts

    edge, shape, classes, rank, blocks, heads, pool = case
    kind = {1: "vector", 2: "tokens", 3: "layers"}[len(shape)]
    cfg = EdgeConfig(name=edge, rank=rank, blocks=blocks, heads=heads, pool=pool)
    net = build_edge_network(edge, kind, shape, classes, cfg)
    state = net.state_dict()
    head = sum(state[k].numel() for k in net.head_keys())
    body = sum(state[k].numel() for k in net.body_keys())
    counts = param_counts(edge, kind, shape, classes, cfg)
    assert counts == {"head": head, "body": body, "total": head + body}
    assert counts["total"] == sum(p.numel() for p in net.parameters())


def test_param_counts_reject_bad_input():
    from miet_fed.config import EdgeConfig
    from miet_fed.edge.networks import param_counts

    valid = "lae, layerwise, linear"
    with pytest.raises(MietError, match=f"unknown edge network 'mlp'; valid: {valid}"):
        EdgeConfig(name="mlp")
    with pytest.raises(MietError, match="consumes tokens payloads"):
        param_counts("lae", "vector", (8,), 2, EdgeConfig(rank=4, heads=2))
    with pytest.raises(MietError, match="divisible"):
        EdgeConfig(rank=6, heads=4)
    with pytest.raises(MietError, match="unknown edge.pool"):
        EdgeConfig(pool="max")


def test_shared_params_and_run_bytes():
    counts = {"head": 7690, "body": 102336, "total": 110026}
    assert [cost.shared_params(counts, s) for s in cost.SHARE_PARTS] == [
        counts["total"],
        counts["body"],
        counts["head"],
        0,
    ]
    with pytest.raises(MietError, match="unknown shared part"):
        cost.shared_params(counts, "tail")
    body = cost.shared_params(counts, "body")
    assert cost.run_param_bytes(body, 5, 3) == cost.weight_exchange_bytes(body, 5, 3)
    assert cost.run_param_bytes(body, [5, 4, 5], 3) == 2 * 14 * body * 4
    assert cost.run_param_bytes(body, [5, 4], 2, bytes_per_param=2) == 2 * 9 * body * 2
    with pytest.raises(ValueError, match="3 rounds"):
        cost.run_param_bytes(body, [5, 4], 3)
