"""Edge networks and the device-side training loop, on tiny tensors."""

from __future__ import annotations

import pytest
import torch

from miet_fed.comm import codec
from miet_fed.config import EdgeConfig
from miet_fed.edge.networks import EDGE_NETWORKS, LowRankAttention, build_edge_network
from miet_fed.edge.train import Optim, evaluate, fit
from miet_fed.errors import MietError

CFG = EdgeConfig(rank=8, blocks=2, heads=2)
SHAPES = {"tokens": (5, 16), "vector": (16,), "layers": (3, 5, 16)}


@pytest.mark.parametrize("name", EDGE_NETWORKS.names())
def test_every_network_builds_runs_and_splits_head_from_body(name):
    cls = EDGE_NETWORKS.get(name)
    for kind in cls.accepts:
        net = build_edge_network(name, kind, SHAPES[kind], 3, CFG)
        assert net(torch.randn(4, *SHAPES[kind])).shape == (4, 3)
        head, body = net.head_parameters(), net.body_parameters()
        assert sum(p.numel() for p in head) == net.head.weight.numel() + 3
        assert len(head) + len(body) == len(list(net.parameters()))
        assert net.trainable_parameters() == sum(p.numel() for p in net.parameters())
        assert set(net.head_keys()).isdisjoint(net.body_keys())


def test_low_rank_block_starts_as_identity_and_checks_heads():
    block = LowRankAttention(16, 8, 2)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(block(x), x)
    with pytest.raises(MietError, match="divisible"):
        LowRankAttention(16, 6, 4)


def test_fit_learns_a_separable_task_from_encoded_payloads():
    torch.manual_seed(0)
    y = torch.arange(120) % 3
    x = torch.randn(120, 5, 16) * 0.1
    x[:, 0, :3] += torch.nn.functional.one_hot(y, 3).float() * 2  # class sits in the CLS token
    parts = codec.encode(x, "fp16")
    net = build_edge_network("lae", "tokens", (5, 16), 3, CFG)
    before = evaluate(net, parts, y)[1]
    loss, acc = fit(net, parts, y, Optim(20, 16, 3e-3, 0.0), torch.Generator().manual_seed(0))
    assert acc > 0.95 and evaluate(net, parts, y)[1] > max(before, 0.9)


def test_fit_trains_only_the_given_parameters():
    y = torch.arange(30) % 3
    parts = codec.encode(torch.randn(30, 5, 16), "fp32")
    net = build_edge_network("lae", "tokens", (5, 16), 3, CFG)
    body_before = [p.detach().clone() for p in net.body_parameters()]
    fit(
        net,
        parts,
        y,
        Optim(2, 8, 1e-2, 0.0),
        torch.Generator().manual_seed(0),
        params=net.head_parameters(),
    )
    assert all(torch.equal(a, b) for a, b in zip(body_before, net.body_parameters(), strict=True))
