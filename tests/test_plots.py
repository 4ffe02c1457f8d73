"""Plots fit for a paper: every plot of the report rendered from real small runs, with labelled
axes and tick labels a reader sees; byte axes readable whatever their range; labels that do not
print over each other; SI units as in the tables and `miet-fed cost`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from miet_fed.cli import main
from miet_fed.plotting import bytes_axis, figure, place_labels, tick_labels
from miet_fed.report import Report, _single_run, _sweep
from miet_fed.units import human_bytes
from tests.conftest import make_tiny_npz
from tests.test_sweep import session_cache, write_sweep


def assert_readable(fig, name: str) -> None:
    """Every axes with data has an x and y label and at least two tick labels on each axis."""
    for ax in fig.axes:
        if not ax.has_data():
            continue
        assert ax.get_xlabel().strip() or ax.get_xticklabels(), (name, "x label")
        assert ax.get_ylabel().strip(), (name, "y label")
        labels = tick_labels(ax)
        twins = [a for a in ax.get_shared_x_axes().get_siblings(ax) if a is not ax]
        x_shown = labels["x"] or [x for a in twins for x in tick_labels(a)["x"]]
        assert len(x_shown) >= 1, (name, "x", labels)  # bars: one tick per round
        assert len(labels["y"]) >= 2, (name, "y", labels)


def _report(src: Path, out: Path, single: bool = False) -> Report:
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(src=src, out=out, title="t")
    (_single_run if single else _sweep)(rep, src)
    return rep


@pytest.fixture(scope="module")
def tune_sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plots-tune")
    toml = write_sweep(
        root / "g.toml",
        make_tiny_npz(root / "tiny.npz"),
        name="g",
        points=[
            {"model.gather": "sum", "edge.name": "lae"},
            {"model.gather": "last", "edge.name": "lae"},
            {"model.gather": "cls", "edge.name": "linear"},
        ],
        seeds=[0],
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MIET_FED_CACHE", str(session_cache(tmp_path_factory)))
        assert main(["sweep", str(toml), "--quiet", "--out", str(root / "g")]) == 0
    return root / "g"


def test_every_tune_plot_has_labelled_axes_and_ticks(tune_sweep, tmp_path):
    rep = _report(tune_sweep, tmp_path / "sweep")
    assert set(rep.figures) == {"pareto.png", "curves.png"}
    run = next((tune_sweep / "runs").iterdir())
    one = _report(run, tmp_path / "one", single=True)
    assert set(one.figures) == {"accuracy_per_epoch.png"}
    for name, fig in {**rep.figures, **one.figures}.items():
        assert_readable(fig, name)
    # sum and last send the same bytes: two points at one x, their labels must both fit.
    fig = rep.figures["pareto.png"]
    boxes = [t.get_window_extent(fig.canvas.get_renderer()) for t in fig.axes[0].texts]
    assert len(boxes) == 3
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :])


@pytest.mark.slow
def test_simulate_sweep_tables_report_and_plots(tmp_path_factory, tmp_path, monkeypatch, capsys):
    """A real 2 x 2 sweep of tiny Flower simulations (strategies against device counts, 2
    rounds): tidy per-round rows, the report's files, and every plot readable."""
    monkeypatch.setenv("MIET_FED_CACHE", str(session_cache(tmp_path_factory)))
    toml = write_sweep(
        tmp_path / "s.toml",
        make_tiny_npz(tmp_path / "tiny.npz"),
        command="simulate",
        name="s",
        fixed={"fed.rounds": 2, "fed.partition": "iid", "train.epochs": 1},
        grid={"fed.strategy": ["local", "fedavg"], "fed.num_clients": [2, 4]},
    )
    sweep = tmp_path / "s"
    assert main(["sweep", str(toml), "--quiet", "--json", "--out", str(sweep)]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["ran"] == 4
    runs = pd.read_csv(sweep / "runs.csv")
    summary = pd.read_csv(sweep / "summary.csv")
    assert list(summary["fed.strategy"]) == ["local", "local", "fedavg", "fedavg"]
    assert list(summary["fed.num_clients"]) == [2, 4, 2, 4]
    assert (summary["total_bytes"] > 0).all()
    fedavg = runs[runs["fed.strategy"] == "fedavg"]
    assert list(fedavg["round"]) == [0, 1, 2] * 2  # round 0: the initial global model
    assert fedavg["global_acc"].notna().all()
    assert set(runs["strategy"]) == {"local", "fedavg"}
    assert main(["report", str(sweep)]) == 0
    for name in ("report.md", "pareto.png", "vs_clients.png", "client_spread.png", "curves.png"):
        assert (sweep / "report" / name).is_file(), name

    rep = _report(sweep, tmp_path / "rep")
    assert {"pareto.png", "vs_clients.png", "client_spread.png", "curves.png"} <= set(rep.figures)
    one = _report(sweep / "runs" / "strategy_fedavg-num_clients_4", tmp_path / "one", single=True)
    assert {"accuracy_per_round.png", "bytes_per_round.png"} <= set(one.figures)
    for name, fig in {**rep.figures, **one.figures}.items():
        assert_readable(fig, name)


@pytest.mark.parametrize(
    ("values", "scale"),
    [
        ([346.3e6, 364.8e6], "linear scale"),  # the README's strategy table: under a decade
        ([100.0e6, 100.4e6], "linear scale"),
        ([2e3, 9e3], "linear scale"),
        ([1.5e3, 4e4], "log scale"),  # between one and two decades
        ([1e3, 1e9], "log scale"),  # six decades
        ([0, 18.5e6, 264e6], "symlog scale: 0 = none counted"),  # `local` shares nothing
    ],
)
def test_byte_axes_always_show_distinct_si_labels(values, scale):
    fig, ax = figure()
    ax.plot(values, range(len(values)), "o")
    assert bytes_axis(ax, pd.Series(values)) == scale
    ax.set_xlabel("bytes")
    ax.set_ylabel("y")
    labels = tick_labels(ax)["x"]
    assert len(labels) >= 2 and len(set(labels)) == len(labels), labels
    assert all(label.endswith("B") for label in labels), labels
    assert not any("iB" in label for label in labels)  # SI, not binary, units


def test_point_labels_never_overlap():
    fig, ax = figure()
    points = [(1e6 * (1 + i % 2 * 0.01), 80 + 0.1 * i, f"run number {i}") for i in range(8)]
    ax.scatter([p[0] for p in points], [p[1] for p in points])
    bytes_axis(ax, pd.Series([p[0] for p in points]))
    dropped = place_labels(ax, points)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert len(boxes) + dropped == len(points) and len(boxes) >= 2
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)


def test_one_si_unit_convention():
    assert [human_bytes(n) for n in (772, 3072, 605_184, 1_758_800, 686_389_248)] == [
        "772 B",
        "3.07 kB",
        "605 kB",
        "1.76 MB",
        "686 MB",
    ]
