"""`startup`: from typing `miet-fed simulate` to the first round's work, with a warm cache."""

from __future__ import annotations

from pathlib import Path

from benchmarks.jobs import REAL, TINY, job_settings, prefill, simulate_cli, size_job
from benchmarks.report import Report

DESCRIPTION = (
    "`miet-fed simulate` as a subprocess with every feature already cached: seconds from the "
    "command's start to (a) Flower's simulation engine starting and (b) the first round's work "
    "starting, from the run's machine-readable output only: the JSON summary's arrival on stdout "
    "anchors its timings (wall_seconds, prepare_seconds, startup_seconds, simulation_seconds) to "
    "the command's start, and rounds.csv's elapsed_seconds (the server's clock, which starts "
    "with the ServerApp, at each round's end) times the rounds. (b) is engine start, plus the "
    "server's clock at the end of round 1 (the wait for the client workers and node "
    "registration included), minus one steady round (the median of rounds 2..R), so Flower's "
    "worker start-up inside round 1 counts as start-up."
)

SIZES = {
    "quick": {
        "model": TINY,
        "extra": {"fed.num_clients": 4, "data.n_train": 100, "data.n_test": 50},
        "rounds": 3,
    },
    # The default job (configs/simulate.toml: 20 clients, FedPer, DINOv2 ViT-S/14 at 112 px).
    "default": {"model": REAL, "extra": {}, "rounds": 3},
    "large": {"model": REAL, "extra": {}, "rounds": 5},
}
TARGET_S = 15.0


def run(size: str, work: Path) -> Report:
    s = SIZES[size]
    pairs, cfg = size_job(s)
    rep = Report("startup", DESCRIPTION)
    rep.settings = {
        **job_settings(cfg),
        "pool_images": cfg.data.n_train,
        "test_images": cfg.data.n_test,
        "rounds": cfg.fed.rounds,
    }
    _, _, computed, prefill_s = prefill(cfg, work)
    sim = simulate_cli(pairs, work / "sim")
    steady = sim.steady_round
    round1 = sim.round1_end
    first_work = None if round1 is None or steady is None else round1 - steady
    startup = sim.summary.get("startup_seconds")
    computed_in_run = sim.summary.get("features_computed")
    rep.figures = {
        "prefill_forwards": computed,
        "prefill_seconds": prefill_s,
        "before_run_simulate_seconds": sim.run_start,
        "summary_prepare_seconds": sim.summary.get("prepare_seconds"),
        "summary_startup_seconds": startup,
        "command_to_engine_start_seconds": sim.engine_start,
        "engine_outside_rounds_seconds": sim.engine_outside_rounds,
        "round1_server_seconds": sim.round_elapsed.get(1),
        "command_to_round1_end_seconds": round1,
        "steady_round_seconds": steady,
        "command_to_first_round_work_seconds": first_work,
        "summary_extract_seconds": sim.summary.get("extract_seconds"),
        "features_computed": computed_in_run,
        "backbone_forwards": sim.summary.get("backbone_forwards"),
        "command_to_summary_seconds": sim.summary_seen,
        "command_seconds": sim.wall,
        "after_engine_seconds": sim.after_engine,
        "peak_rss_bytes": sim.peak_rss,
    }
    rows = [
        ("Flower engine start", sim.engine_start),
        ("- of which: interpreter, imports, config", sim.run_start),
        ("- of which: spec and partitions (prepare_seconds)", sim.summary.get("prepare_seconds")),
        ("- of which: ray.init + backbone actor + cache check", startup),
        ("first round's work (round 1 end - steady round)", first_work),
        ("round 1 end", round1),
        ("JSON summary printed", sim.summary_seen),
        ("exit", sim.wall),
        ("(engine outside the server's clock: its shutdown, mostly)", sim.engine_outside_rounds),
        ("(a steady round, for reference)", steady),
    ]
    rep.rows = [{"from command start to": k, "seconds": v} for k, v in rows]
    for metric, value in (
        ("command -> first round's work (s)", first_work),
        ("command -> Flower engine start (s)", sim.engine_start),
    ):
        met = None if value is None else value < TARGET_S
        rep.check(metric, value, f"< {TARGET_S:g}", met)
    rep.check(
        "features computed in the run (warm cache)", computed_in_run, "== 0", computed_in_run == 0
    )
    rep.notes.append(
        f"Warm cache: {computed} features were computed before the timed command "
        f"({prefill_s:.1f} s, not timed); the command itself computed {computed_in_run}."
    )
    return rep
