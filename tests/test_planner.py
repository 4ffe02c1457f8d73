"""The payload planner: pure functions (no torch), then its config errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from miet_fed.comm import planner
from miet_fed.comm.planner import PayloadFormat
from miet_fed.errors import MietError

# bytes per image of Gather* k=12 at 112 px (65 x 384) in each format, and made-up accuracies
TABLE = pd.DataFrame(
    {
        "format": ["fp32", "fp16", "int8", "int8-p2", "int8-p4"],
        "bytes_per_image": [99_840, 49_920, 25_220, 6_596, 1_940],
        "accuracy": [0.870, 0.870, 0.865, 0.850, 0.800],
    }
)


def _acc(chosen, images):
    acc = TABLE.set_index("format")["accuracy"]
    return float(np.average(acc.loc[chosen].to_numpy(), weights=images))


def _bytes(chosen, images):
    size = TABLE.set_index("format")["bytes_per_image"]
    return int(np.sum(size.loc[chosen].to_numpy() * images))


def test_format_names_parse_and_bad_ones_say_how_to_write_them():
    assert PayloadFormat.parse("int8-p2") == PayloadFormat("int8", 2)
    assert PayloadFormat.parse(" fp16 ").name == "fp16"
    assert PayloadFormat("bf16", 4).name == "bf16-p4"
    assert [f.name for f in planner.parse_formats("fp32, int8-p4")] == ["fp32", "int8-p4"]
    for bad in ("int4", "int8-p0", "int8p2", "fp32-p", ""):
        with pytest.raises(MietError, match="DTYPE-pN"):
            PayloadFormat.parse(bad)
    with pytest.raises(MietError, match="twice"):
        planner.parse_formats("int8,int8")


def test_derivable_formats_are_coarser_pools_and_any_dtype_from_fp32():
    planner.check_derivable(PayloadFormat("int8", 4), "fp32", 2)
    planner.check_derivable(PayloadFormat("int8", 2), "int8", 1)
    with pytest.raises(MietError, match="multiples"):
        planner.check_derivable(PayloadFormat("fp32", 3), "fp32", 2)
    with pytest.raises(MietError, match="model.dtype=fp32"):
        planner.check_derivable(PayloadFormat("fp16", 1), "int8", 1)


def test_seconds_budget_gives_each_device_the_best_format_its_link_fits():
    rng = np.random.default_rng(0)
    images = rng.integers(10, 200, size=50)
    down = 50e6 * rng.lognormal(0, 1.0, size=50)
    budget = 0.5
    chosen = planner.plan_formats(images, down, TABLE, budget_seconds=budget)
    frame = planner.plan_frame(images, down, chosen, TABLE)
    assert (frame.download_seconds <= budget + 1e-9).all()
    assert len(set(chosen)) > 1  # links differ: so do the formats
    info = TABLE.set_index("format")
    for d, fmt in enumerate(chosen):  # nothing more accurate would have fitted
        better = info[info.accuracy > info.loc[fmt, "accuracy"]]
        secs = 8 * images[d] * better.bytes_per_image / down[d]
        assert (secs > budget).all()
    # fp32 is never chosen: fp16 is as accurate with half the bytes
    assert "fp32" not in set(chosen)
    # without a budget, everyone gets the most accurate format (fewest bytes on a tie)
    assert set(planner.plan_formats(images, down, TABLE)) == {"fp16"}


def test_a_budget_no_format_meets_is_a_one_line_error():
    with pytest.raises(MietError, match="no format fits the slowest device") as err:
        planner.plan_formats(np.array([100]), np.array([1e6]), TABLE, budget_seconds=0.001)
    assert "\n" not in str(err.value)
    with pytest.raises(MietError, match="smallest formats alone need"):
        planner.plan_formats(np.array([100, 100]), np.ones(2) * 1e7, TABLE, budget_bytes=1000)
    with pytest.raises(MietError, match="no single payload format"):
        planner.single_format(np.array([100]), np.array([1e6]), TABLE, budget_seconds=0.001)


@pytest.mark.parametrize("seed", range(5))
def test_total_budget_is_kept_and_more_budget_never_plans_less(seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(5, 300, size=40)
    down = 50e6 * rng.lognormal(0, 1.0, size=40)
    floor = _bytes(np.full(40, "int8-p4"), images)
    top = _bytes(np.full(40, "fp16"), images)
    last = -1.0
    for budget in np.linspace(floor, top * 1.1, 12):
        chosen = planner.plan_formats(images, down, TABLE, budget_bytes=budget)
        assert _bytes(chosen, images) <= budget
        acc = _acc(chosen, images)
        assert acc >= last - 1e-12
        last = acc
        # the plan is at least as good as the best single format under the same budget
        single = planner.single_format(images, down, TABLE, budget_bytes=budget)
        assert acc >= _acc(np.full(40, single), images) - 1e-12
    assert set(chosen) == {"fp16"}  # enough for everyone's best


def test_total_budget_upgrades_along_the_hull_only():
    # int8-p2 lies under the segment int8-p4 .. int8: a mix of those two buys more per byte
    table = TABLE.assign(accuracy=[0.87, 0.87, 0.865, 0.805, 0.80])
    hull = planner._hull(table.bytes_per_image.to_numpy(), table.accuracy.to_numpy())
    assert [table.format[j] for j in hull] == ["int8-p4", "int8", "fp16"]
    images = np.full(10, 100)
    chosen = planner.plan_formats(images, np.full(10, 1e8), table, budget_bytes=10_000_000)
    assert "int8-p2" not in set(chosen) and "int8" in set(chosen)


def test_seconds_and_total_budgets_together():
    images = np.array([100, 100, 100, 100])
    down = np.array([1e6, 1e7, 1e8, 1e9])
    chosen = planner.plan_formats(images, down, TABLE, budget_seconds=2.0, budget_bytes=8e6)
    frame = planner.plan_frame(images, down, chosen, TABLE)
    assert (frame.download_seconds <= 2.0).all()
    assert frame.feature_bytes.sum() <= 8e6
    assert chosen[0] == "int8-p4"  # 1 Mbit/s: only the smallest fits 2 s


def test_accuracy_table_is_read_and_checked(tmp_path):
    good = tmp_path / "acc.csv"
    good.write_text("# measured\nformat,accuracy\nfp32,87.0\nint8-p2,85.0\n")
    table = planner.read_table(good, ["int8-p2", "fp32"])
    assert table.loc["int8-p2", "accuracy"] == 85.0
    with pytest.raises(MietError, match="no accuracy for int8"):
        planner.read_table(good, ["int8"])
    with pytest.raises(MietError, match="no such file"):
        planner.read_table(tmp_path / "missing.csv", ["fp32"])
    bad = tmp_path / "bad.csv"
    bad.write_text("name,acc\nfp32,1\n")
    with pytest.raises(MietError, match="columns format and accuracy"):
        planner.read_table(bad, ["fp32"])
    bad.write_text("format,accuracy\nfp32,high\n")
    with pytest.raises(MietError, match="numeric"):
        planner.read_table(bad, ["fp32"])


def test_builtin_table_names_measured_formats_only():
    import tomllib

    table = tomllib.loads(planner.BUILTIN_TABLE.read_text())["accuracy"]
    for name in table:
        PayloadFormat.parse(name)
    assert all(0 < a < 1 for a in table.values())
    read = planner.read_table(planner.BUILTIN_TABLE, ["fp32", "int8-p8"])
    assert read.loc["fp32", "accuracy"] == table["fp32"]


def test_plan_config_errors_before_anything_runs():
    from miet_fed.config import SimulateConfig, build_config

    with pytest.raises(MietError, match="need plan.formats"):
        build_config(SimulateConfig, {"plan": {"budget_seconds": 1.0}}, "test")
    with pytest.raises(MietError, match="DTYPE-pN"):
        build_config(SimulateConfig, {"plan": {"formats": "fp32,int4"}}, "test")
    cfg = build_config(SimulateConfig, {"plan": {"formats": "fp32,int8-p2"}}, "test")
    assert cfg.plan.formats == "fp32,int8-p2"


def test_plan_keys_at_their_defaults_keep_old_run_identities():
    from miet_fed.config import SimulateConfig, build_config
    from miet_fed.results import run_identity

    cfg = build_config(SimulateConfig, {}, "test")
    planned = build_config(SimulateConfig, {"plan": {"formats": "fp32,int8"}}, "test")
    assert run_identity("simulate", cfg) == "e4f8afb7d6d1e8b5"  # before [plan] existed
    assert run_identity("simulate", planned) != run_identity("simulate", cfg)


def test_tolerance_counts_near_accuracies_as_equal_and_saves_bytes():
    images, down = np.full(3, 100), np.array([1e6, 1e8, 1e9])
    exact = planner.plan_formats(images, down, TABLE)
    assert set(exact) == {"fp16"}
    near = planner.plan_formats(images, down, TABLE, tolerance=0.006)
    assert set(near) == {"int8"}  # 0.5 points below fp16 at half its bytes
    assert set(planner.plan_formats(images, down, TABLE, tolerance=0.1)) == {"int8-p4"}
    assert planner.single_format(images, down, TABLE, tolerance=0.006) == "int8"
