"""Payload formats (issue 15, part 1): token pooling and the low-rank PCA projection, on a tiny
random-weight ViT. The pooled payload is checked against a hand-computed average of a real
forward; the basis is checked for orthonormality, determinism, reuse and damage; the bytes on
the wire against the cost model for every (token_pool, proj_rank, dtype); tune and simulate end
to end with ledger == model; bad formats are one-line errors before any backbone work."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from miet_fed.cloud.backbone import build_backbone, describe_vit
from miet_fed.cloud.gather import get_gather
from miet_fed.cloud.payload import fit_pca, pool_grid, project, sample_ids
from miet_fed.cloud.service import FeatureService, payload_info
from miet_fed.comm import codec, cost
from miet_fed.config import ModelConfig
from miet_fed.errors import MietError
from tests.conftest import TINY

#: vit_tiny_patch16 at 64 px: a 4x4 patch grid plus CLS (17 tokens), dim 192
MODEL = ModelConfig(
    name="vit_tiny_patch16_224", weights="random", img_size=64, k=2, proj_sample=12, batch_size=8
)


def _images(n: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 24, 24)).astype(np.uint8)


def _service(root: Path, **settings) -> FeatureService:
    model = ModelConfig(**{**MODEL.__dict__, **settings})
    return FeatureService(model, _images(), "test-images", cache_root=root, progress=False)


@pytest.fixture(scope="module")
def maps() -> list[torch.Tensor]:
    """z_0 .. z_2 of a real forward of the tiny ViT on 3 images."""
    bb = build_backbone(MODEL.name, "random", MODEL.img_size)
    return bb.token_maps(bb.preprocess(_images(3)), 2)


def _hand_pool(x: torch.Tensor, side: int, p: int) -> torch.Tensor:
    """[B, 1 + side^2, D] -> CLS, then each p x p block's mean, blocks in row-major order."""
    out = [x[:, 0]]
    for bi, bj in itertools.product(range(side // p), repeat=2):
        cells = [1 + (bi * p + a) * side + (bj * p + b) for a in range(p) for b in range(p)]
        out.append(torch.stack([x[:, c] for c in cells]).mean(0))
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("pool", [2, 4])
def test_pooled_payload_is_the_average_of_each_grid_block(pool, maps, tmp_path):
    service = _service(tmp_path, token_pool=pool)
    got = codec.decode(service.features(np.arange(3)))
    want = _hand_pool(maps[0] + maps[1] + maps[2], 4, pool)
    assert got.shape == (3, 1 + (4 // pool) ** 2, 192) == (3, *service.payload_shape)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got[:, 1], maps[0].sum(0)[1])  # pooled, not a token copied
    layers = _service(tmp_path, token_pool=pool, gather="all")  # each map of `all` pooled
    got = codec.decode(layers.features(np.arange(3)))
    for i, z in enumerate(maps):
        torch.testing.assert_close(got[:, i], _hand_pool(z, 4, pool), rtol=1e-5, atol=1e-5)


def test_projection_basis_is_orthonormal_deterministic_cached_and_checked(tmp_path, capsys):
    a = _service(tmp_path / "a", token_pool=2, proj_rank=8)
    payload = codec.decode(a.features(np.arange(4)))
    assert a.basis.fits == 1 and a.basis.path.is_file() and a.stats()["basis_fits"] == 1
    assert a.stats()["basis_forwards"] == 12 and a.stats()["backbone_forwards"] == 4
    basis = a.basis.get(lambda: pytest.fail("refit"))
    v = basis["components"]
    torch.testing.assert_close(v.T @ v, torch.eye(192), rtol=0, atol=1e-4)
    assert torch.all(basis["variances"][:-1] >= basis["variances"][1:])
    assert basis["sample_ids"].tolist() == sample_ids(20, 12).tolist()
    pooled = pool_grid(
        a.backbone.gathered(_images()[:4], get_gather("sum"), 2), a.prefix, a.cfg.token_pool
    )
    torch.testing.assert_close(payload, project(pooled, basis, 8), rtol=1e-4, atol=1e-4)

    again = _service(tmp_path / "a", token_pool=2, proj_rank=8)  # same cache: read, not refit
    again.features(np.arange(4, 8))  # new images: the basis is needed
    assert again.basis.fits == 0 and again.backbone.forwards == 4  # no sample forwards
    assert again.stats()["basis_forwards"] == 0
    other = _service(tmp_path / "b", token_pool=2, proj_rank=8)  # fresh cache: same basis
    other.features(np.arange(2))
    b = other.basis.get(lambda: pytest.fail("refit"))
    assert other.basis.fits == 1 and all(torch.equal(basis[k], b[k]) for k in basis)
    rank4 = _service(tmp_path / "a", token_pool=2, proj_rank=4, dtype="int8")  # same basis file
    rank4.features(np.arange(2))
    assert rank4.basis.fits == 0 and rank4.payload_shape == (5, 4)

    data = bytearray(a.basis.path.read_bytes())  # damage a byte of the tensors, not the header
    data[-10] ^= 0xFF
    a.basis.path.write_bytes(bytes(data))
    capsys.readouterr()
    hurt = _service(tmp_path / "a", token_pool=2, proj_rank=8)
    hurt.features(np.arange(8, 10))
    assert hurt.basis.discarded == 1 and hurt.basis.fits == 1
    assert "failed its checksum" in capsys.readouterr().err
    refit = hurt.basis.get(lambda: pytest.fail("refit"))
    assert all(torch.equal(basis[k], refit[k]) for k in basis)  # the same fit again


def test_fit_is_deterministic_and_the_sample_follows_its_seed():
    assert sample_ids(100, 10, 0).tolist() == sample_ids(100, 10, 0).tolist()
    assert sample_ids(100, 10, 0).tolist() != sample_ids(100, 10, 1).tolist()
    assert len(sample_ids(5, 256)) == 5  # a small dataset: all of it
    x = torch.randn(50, 6, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 7)
    one, two = fit_pca(lambda: [x[:20], x[20:]]), fit_pca(lambda: [x])
    for k in one:
        torch.testing.assert_close(one[k], two[k], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(one["mean"], x.mean(0))
    assert one["components"][:, 0].abs().argmax() == 5  # the largest-variance channel


FORMATS = [(1, 0), (2, 0), (4, 0), (1, 8), (2, 8), (4, 8), (2, 192)]


@pytest.mark.parametrize("gather", ["sum", "last", "all", "cls"])
def test_encoded_bytes_equal_the_cost_model_for_every_format(gather, maps):
    vit = describe_vit(MODEL.name, MODEL.img_size)
    g = get_gather(gather)
    gathered = g(maps)
    basis = fit_pca(lambda: [gathered])
    for (pool, rank), dtype in itertools.product(FORMATS, cost.DTYPE_BYTES):
        if g.kind == "vector" and pool > 1:
            continue
        x = gathered if g.kind == "vector" else pool_grid(gathered, vit["prefix"], pool)
        x = project(x, basis, rank) if rank else x
        expected = cost.feature_bytes_per_image(
            gather, vit["tokens"], vit["dim"], 2, dtype, vit["prefix"], pool, rank
        )
        assert codec.nbytes(codec.encode(x, dtype)) == 3 * expected, (pool, rank, dtype)
        model = ModelConfig(**{**MODEL.__dict__, "gather": gather, "dtype": dtype})
        model = ModelConfig(**{**model.__dict__, "token_pool": pool, "proj_rank": rank})
        assert payload_info(model) == (g.kind, tuple(x.shape[1:]), expected)


def test_service_serves_what_payload_info_predicts(tmp_path):
    for settings in [
        {"token_pool": 2, "proj_rank": 16, "dtype": "int8"},
        {"token_pool": 4, "gather": "all", "dtype": "bf16"},
        {"proj_rank": 8, "gather": "cls", "dtype": "fp16"},
    ]:
        service = _service(tmp_path, **settings)
        parts = service.features(np.arange(5))
        assert codec.nbytes(parts) == 5 * service.bytes_per_image
        assert tuple(parts["values"].shape[1:]) == service.payload_shape


def test_bad_formats_fail_before_any_backbone_work(monkeypatch):
    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone was built")

    monkeypatch.setattr("miet_fed.cloud.service.build_backbone", no_backbone)
    with pytest.raises(MietError, match=r"token_pool=3 does not divide the 4x4 .*valid: 1, 2, 4"):
        payload_info(ModelConfig(**{**MODEL.__dict__, "token_pool": 3}))
    with pytest.raises(MietError, match="proj_rank=193 is larger than the payload dimension 192"):
        payload_info(ModelConfig(**{**MODEL.__dict__, "proj_rank": 193}))
    with pytest.raises(MietError, match="gather cls sends one vector"):
        ModelConfig(**{**MODEL.__dict__, "gather": "cls", "token_pool": 2})
    with pytest.raises(MietError, match="one vector"):  # any vector gather, by its kind
        cost.format_shape((192,), "vector", 1, 2, 0)


def _run(capsys, command: str, npz: Path, out: str, *sets: str, tiny=TINY) -> dict:
    from miet_fed.cli import main

    args = [command, "--dataset", f"npz:{npz}", *tiny, "--out", out, "--quiet", "--json"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


FORMAT = ["model.token_pool=2", "model.proj_rank=16", "model.proj_sample=40", "model.dtype=int8"]


def test_tune_with_a_pooled_projected_int8_payload(tiny_npz, capsys):
    base = ["data.n_train=60", "data.n_val=12", "data.n_test=60", "train.epochs=15", "model.k=3"]
    s = _run(capsys, "tune", tiny_npz, "results/t", *base, *FORMAT)
    assert s["payload_shape"] == [2, 16]  # 2x2 grid pooled to 1 token, plus CLS
    assert s["bytes_per_image"] == cost.feature_bytes_per_image("sum", 5, 192, 3, "int8", 1, 2, 16)
    assert s["bytes_per_image"] == 2 * (16 + 4)
    assert s["bytes_served"] == s["bytes_per_image"] * 120
    assert (s["token_pool"], s["proj_rank"], s["basis_fits"]) == (2, 16, 1)
    plain = _run(capsys, "tune", tiny_npz, "results/u", *base, "train.epochs=1")
    assert s["trainable_params"] < plain["trainable_params"]  # the edge network follows d
    assert s["test_acc"] > 0.5  # 3 separable classes: chance is 0.33


def test_simulate_with_a_pooled_projected_int8_payload(tiny_npz, capsys):
    sets = ["data.n_train=80", "data.n_test=20", "fed.num_clients=4", "fed.rounds=2"]
    sets += ["train.epochs=1", "model.k=3", "fed.strategy=fedavg", *FORMAT]
    s = _run(capsys, "simulate", tiny_npz, "results/s", *sets)
    assert s["ledger_equals_model"], (s["bytes_by_kind"], s["model_bytes_by_kind"])
    assert s["feature_bytes_per_image"] == 40 and s["failures"] == 0
    assert s["basis_fits"] == 1


def test_payload_keys_at_their_default_leave_run_identities_alone():
    """Keys added for payload formats are left out of a run's identity (and a checkpoint's
    signature) at their default, so folders and checkpoints saved before them stay theirs;
    set, they count like any other setting."""
    from dataclasses import replace

    from miet_fed.config import SimulateConfig, TuneConfig, strip_runtime, to_dict
    from miet_fed.results import run_identity

    for cls, command in ((SimulateConfig, "simulate"), (TuneConfig, "tune")):
        base = cls()
        kept = strip_runtime(cls, to_dict(base))["model"]
        assert not {"token_pool", "proj_rank", "proj_sample"} & set(kept)
        assert {"gather", "k", "dtype"} <= set(kept)  # the others stay
        for key, value in (("token_pool", 2), ("proj_rank", 8), ("proj_sample", 100)):
            other = replace(base, model=replace(base.model, **{key: value}))
            assert strip_runtime(cls, to_dict(other))["model"][key] == value
            assert run_identity(command, other) != run_identity(command, base)


# --- payload plans (issue 15, part 2): formats derived from the cached payload -------------------


@pytest.mark.parametrize("fmt", ["fp16", "int8", "fp32-p2", "int8-p4", "bf16-p2"])
def test_derived_format_equals_the_format_computed_directly(fmt, tmp_path):
    """A planned device's payload, derived from the fp32 cache, is the payload a run with that
    format caches (pooling the gathered map, then encoding): the same bytes and shape, and
    values equal up to float rounding (int8: at most one quantisation step)."""
    from miet_fed.comm.planner import PayloadFormat

    want = PayloadFormat.parse(fmt)
    base = _service(tmp_path / "a")
    direct = _service(tmp_path / "b", dtype=want.dtype, token_pool=want.token_pool)
    got, ref = base.features(np.arange(6), fmt), direct.features(np.arange(6))
    assert {k: (v.dtype, v.shape) for k, v in got.items()} == {
        k: (v.dtype, v.shape) for k, v in ref.items()
    }
    assert codec.nbytes(got) == 6 * payload_info(MODEL, fmt)[2] == codec.nbytes(ref)
    step = ref.get("scale", 1e-2)
    assert torch.all((codec.decode(got) - codec.decode(ref)).abs() <= step * 1.01 + 1e-5)
    assert base.forwards == 6 and base.bytes_served == codec.nbytes(got)


def test_underivable_formats_are_refused(tmp_path):
    service = _service(tmp_path, dtype="int8", token_pool=2)
    with pytest.raises(MietError, match="set model.dtype=fp32"):
        service.features(np.arange(2), "fp16-p2")
    with pytest.raises(MietError, match="multiples"):
        service.features(np.arange(2), "int8-p1")
    assert (
        codec.nbytes(service.features(np.arange(2), "int8-p4"))
        == 2 * payload_info(MODEL, "int8-p4")[2]
    )


TINY64 = [*TINY[:-1], "64"]  # a 4x4 patch grid: pools 2 and 4
PLAN = [
    "data.n_train=80",
    "data.n_test=20",
    "fed.num_clients=8",
    "fed.rounds=2",
    "train.epochs=1",
    "model.k=3",
    "link.spread=1.5",
    "link.down_mbps=1",
]


def _plan_table(tmp_path: Path) -> str:
    path = tmp_path / "acc.csv"
    path.write_text("format,accuracy\nfp32,0.9\nint8,0.89\nint8-p2,0.8\nint8-p4,0.7\n")
    return f"plan.accuracy={path}"


@pytest.mark.slow
def test_simulate_serves_each_device_its_planned_format(tiny_npz, tmp_path, capsys):
    """A mixed-format federation: devices on slow links get smaller formats, each device's
    feature bytes are its images times its format's bytes, the ledger equals the model, and
    the shared model trains on every format (one edge network reads them all)."""
    import pandas as pd

    strategy = "fedavg"  # one global model, trained on every format
    sets = [*PLAN, f"fed.strategy={strategy}", "plan.formats=fp32,int8,int8-p2,int8-p4"]
    sets += ["plan.budget_seconds=1.5", _plan_table(tmp_path)]
    s = _run(capsys, "simulate", tiny_npz, f"results/plan-{strategy}", *sets, tiny=TINY64)
    assert s["ledger_equals_model"], (s["bytes_by_kind"], s["model_bytes_by_kind"])
    assert s["failures"] == 0
    plan = pd.read_csv(f"results/plan-{strategy}/plan.csv")
    assert plan["format"].nunique() >= 2, plan
    assert (plan.download_seconds <= 1.5).all()
    assert s["plan_formats"] == plan["format"].value_counts().sort_index().to_dict()
    clients = pd.read_csv(f"results/plan-{strategy}/clients.csv")
    first = clients[clients.features_down_bytes > 0].set_index("client")
    per_image = s["plan_bytes_per_image"]
    for d, row in first.iterrows():
        fmt = plan.loc[d, "format"]
        assert row.features_down_bytes == plan.loc[d, "images"] * per_image[fmt]
    assert clients.personal_acc.notna().all()


def test_plan_errors_come_before_any_backbone_work(tiny_npz, tmp_path, monkeypatch, capsys):
    from miet_fed.cli import main

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone was built")

    monkeypatch.setattr("miet_fed.cloud.service.build_backbone", no_backbone)
    base = ["simulate", "--dataset", f"npz:{tiny_npz}", *TINY64, "--quiet"]
    for s in PLAN:
        base += ["--set", s]
    table = _plan_table(tmp_path)
    cases = {
        "no format fits the slowest device": [
            "plan.formats=fp32,int8",
            "plan.budget_seconds=0.01",
            table,
        ],
        "plan.formats int8-p3: the token pool 3 does not divide": [
            "plan.formats=fp32,int8-p3",
            table,
        ],
        "has no accuracy for int8-p4": [
            "plan.formats=int8-p4",
            table.replace("acc.csv", "missing.csv"),
        ],
        "set model.dtype=fp32": ["plan.formats=fp16", "model.dtype=int8", table],
    }
    (tmp_path / "missing.csv").write_text("format,accuracy\nfp32,0.9\n")
    for message, sets in cases.items():
        args = [*base]
        for x in sets:
            args += ["--set", x]
        assert main(args) != 0
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not Path("results").exists() or not any(Path("results").iterdir())
