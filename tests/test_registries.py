"""One battery over every entry of every registry (timm's `list_models` pattern): a gather, edge
network, strategy or dataset is tested the moment it is registered, in the package or in a
plugin file outside it:

    MIET_FED_PLUGINS=my_plugin.py .venv/bin/python -m pytest tests/test_registries.py

(`os.pathsep`-separated paths, loaded before the entries are listed). Each check is what the
rest of the code relies on without asking: shapes the cost model prices exactly, a classifier
in `head`, parameter counts on the meta device equal to the real module's, parameters that are
a valid config table, a dataset in the canonical layout with a stable fingerprint.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

from miet_fed.cloud.gather import GATHERS, PAYLOAD_KINDS, get_gather
from miet_fed.comm import codec, cost
from miet_fed.config import EdgeConfig, FedConfig, SimulateConfig, build_config, to_dict
from miet_fed.data.base import ImageDataset
from miet_fed.data.datasets import DATASETS
from miet_fed.edge.networks import EDGE_NETWORKS, build_edge_network, gathers_for, param_counts
from miet_fed.errors import MietError
from miet_fed.federation.sharing import PARTS
from miet_fed.federation.strategies import STRATEGIES, FedStrategy
from miet_fed.plugins import load_plugins

load_plugins(p for p in os.environ.get("MIET_FED_PLUGINS", "").split(os.pathsep) if p)

TOKENS, DIM, K = 5, 16, 3
CFG = EdgeConfig(rank=8, blocks=2, heads=2)


def _payload(gather: str, batch: int = 4) -> tuple[str, tuple[int, ...], torch.Tensor]:
    g = get_gather(gather)
    maps = [
        torch.randn(batch, TOKENS, DIM, generator=torch.Generator().manual_seed(i))
        for i in range(K + 1)
    ]
    return g.kind, g.payload_shape(TOKENS, DIM, K), g(maps)


# ---------------------------------------------------------------- gathers


@pytest.mark.parametrize("name", GATHERS.names())
def test_gather_payload_is_what_the_cost_model_prices(name):
    g = get_gather(name)
    assert g.name == name and g.kind in PAYLOAD_KINDS
    kind, shape, out = _payload(name)
    assert tuple(out.shape) == (4, *shape) and torch.isfinite(out).all()
    for dtype in cost.DTYPE_BYTES:
        assert codec.nbytes(codec.encode(out, dtype)) == 4 * cost.encoded_bytes(shape, dtype)
    assert cost.feature_bytes_per_image(name, TOKENS, DIM, K, "fp32") == 4 * int(np.prod(shape))


#: (model.token_pool, model.proj_rank) on the 2x2 patch grid + CLS of TOKENS = 5, DIM = 16
FORMATS = [(1, 0), (2, 0), (1, 4), (2, 4)]


def _formatted(gather: str, pool: int, rank: int) -> tuple[str, tuple[int, ...], torch.Tensor]:
    """The gather's payload pooled and projected as the cloud does it (`cloud.payload`)."""
    from miet_fed.cloud.payload import fit_pca, pool_grid, project

    kind, shape, out = _payload(gather)
    shape = cost.format_shape(shape, kind, 1, pool, rank)
    out = pool_grid(out, 1, pool)
    if rank:
        out = project(out, fit_pca(lambda: [out]), rank)
    return kind, shape, out


def _formats(kind: str) -> list[tuple[int, int]]:
    return [(p, r) for p, r in FORMATS if kind != "vector" or p == 1]


@pytest.mark.parametrize("name", GATHERS.names())
def test_pooled_and_projected_payloads_are_priced_exactly(name):
    for pool, rank in _formats(get_gather(name).kind):
        kind, shape, out = _formatted(name, pool, rank)
        assert tuple(out.shape) == (4, *shape)
        for dtype in cost.DTYPE_BYTES:
            expected = cost.feature_bytes_per_image(name, TOKENS, DIM, K, dtype, 1, pool, rank)
            assert codec.nbytes(codec.encode(out, dtype)) == 4 * expected


def test_every_gather_is_read_by_some_edge_network():
    readable = {g for n in EDGE_NETWORKS.names() for g in gathers_for(n)}
    assert readable == set(GATHERS.names())


# ---------------------------------------------------------------- edge networks


@pytest.mark.parametrize("name", EDGE_NETWORKS.names())
def test_edge_network_reads_its_payloads_and_counts_itself(name):
    cls = EDGE_NETWORKS.get(name)
    assert cls.name == name and set(cls.accepts) <= set(PAYLOAD_KINDS)
    fits = gathers_for(name)
    assert fits, f"no registered gather sends what '{name}' reads"
    assert not cls.default_gather or cls.default_gather in fits
    for gather in fits:
        kind, shape, x = _payload(gather)
        net = build_edge_network(name, kind, shape, 3, CFG)
        logits = net(x)
        assert logits.shape == (4, 3) and torch.isfinite(logits).all()
        assert net.head_keys(), "the classifier must sit under `head.` (strategies split on it)"
        assert set(net.head_keys()).isdisjoint(net.body_keys())
        real = {"head": sum(p.numel() for p in net.head_parameters())}
        real["body"] = sum(p.numel() for p in net.body_parameters())
        real["total"] = real["head"] + real["body"]
        assert param_counts(name, kind, shape, 3, CFG) == real  # what the ledger is held to
        logits.sum().backward()  # trainable end to end
        assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


@pytest.mark.parametrize("name", EDGE_NETWORKS.names())
def test_edge_network_follows_pooled_and_projected_shapes(name):
    """Fewer tokens, fewer channels: the network reads them, and the counts the cost model
    takes from it are those of the network built on that shape."""
    for gather in gathers_for(name):
        for pool, rank in _formats(get_gather(gather).kind):
            kind, shape, x = _formatted(gather, pool, rank)
            net = build_edge_network(name, kind, shape, 3, CFG)
            assert net(x).shape == (4, 3)
            counts = param_counts(name, kind, shape, 3, CFG)
            assert counts["total"] == net.trainable_parameters()
            if rank:
                assert counts != param_counts(name, kind, _payload(gather)[1], 3, CFG)


# ---------------------------------------------------------------- strategies


@pytest.mark.parametrize("name", STRATEGIES.names())
def test_strategy_declares_a_valid_share_and_parameter_table(name):
    cls = STRATEGIES.get(name)
    assert issubclass(cls, FedStrategy) and cls.name == name
    assert cls.share in PARTS
    assert dataclasses.is_dataclass(cls.Params) and cls.Params.__dataclass_params__.frozen
    params = cls.Params()  # every parameter has a default
    for f in dataclasses.fields(cls.Params):
        assert f.metadata.get("help"), f"fed.{name}.{f.name} needs help text (use setting())"
    cfg = build_config(SimulateConfig, {"fed": {"strategy": name}})
    assert cfg.fed.params == params
    table = to_dict(cfg)["fed"].get(name, {})
    assert table == dataclasses.asdict(params)  # written to config.toml, read back the same
    assert build_config(SimulateConfig, to_dict(cfg)) == cfg
    flower = cls.flower_cls(**cls().flower_kwargs(FedConfig(strategy=name)))
    for attr in cls.server_state:
        assert hasattr(flower, attr), f"{name}: server_state '{attr}' is not on {flower}"


# ---------------------------------------------------------------- datasets


@pytest.mark.parametrize("name", DATASETS.names())
def test_dataset_is_in_the_canonical_layout_with_a_stable_fingerprint(name):
    try:
        ds = DATASETS.get(name)()
    except MietError as exc:  # its package is not installed here: the message says how
        assert "\n" not in str(exc) and ("install" in str(exc) or "needs" in str(exc))
        pytest.skip(str(exc))
    assert isinstance(ds, ImageDataset)
    assert ds.images.dtype == np.uint8 and ds.images.ndim in (3, 4) and len(ds) >= 2
    assert ds.labels.min() >= 0 and ds.labels.max() < ds.num_classes
    assert len(np.unique(ds.labels)) >= 2
    assert len(ds.fingerprint) >= 8 and DATASETS.get(name)().fingerprint == ds.fingerprint
