"""`scaling`: round time and memory as registered and sampled clients grow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.jobs import TINY, prefill, sim_config, sim_pairs, simulate_cli
from benchmarks.machine import GIB
from benchmarks.report import Report, ratio

DESCRIPTION = (
    "`miet-fed simulate` (FedPer, LAE, 1 local epoch, IID, fed.cpus_per_client=1) with N "
    "registered devices (packed onto cohort nodes) and M sampled per round: steady round time "
    "(median of rounds 2..R, from rounds.csv's elapsed_seconds) and peak memory of the whole "
    "process tree "
    "(driver, Ray GCS/raylet, workers, backbone actor), sampled every 0.25 s from /proc. Every "
    "client holds the same number of images whatever N, so a round's work depends on M only. "
    "Backbone: a tiny random ViT (vit_tiny_patch16_224 at 32 px): this measures the federation, "
    "not the backbone; features are cached beforehand."
)

SIZES = {
    "quick": {"configs": [(10, 10), (100, 10)], "rounds": 3},
    "default": {"configs": [(10, 10), (100, 10), (1000, 10), (100, 100)], "rounds": 6},
    "large": {
        "configs": [(10, 10), (100, 10), (1000, 10), (100, 100), (1000, 1000)],
        "rounds": 10,
    },
}
IMAGES_PER_CLIENT = 8  # 80 % train, 20 % personal test
N_TEST = 100
BASE_SAMPLED = 10
MEMORY_LIMIT_GIB = 6.0


def pairs_for(registered: int, sampled: int, rounds: int) -> list[str]:
    return sim_pairs(
        TINY,
        data__dataset="animal-mnist",
        data__n_train=registered * IMAGES_PER_CLIENT,
        data__n_test=N_TEST,
        fed__num_clients=registered,
        fed__clients_per_round=0 if sampled >= registered else sampled,
        fed__rounds=rounds,
        fed__partition="iid",
        fed__cpus_per_client=1,
        train__epochs=1,
        run__seed=0,
    )


def run(size: str, work: Path) -> Report:
    s = SIZES[size]
    rounds = s["rounds"]
    rep = Report("scaling", DESCRIPTION)
    rep.settings = {
        "model": f"{TINY['name']} random @ {TINY['img_size']} px",
        "images_per_client": IMAGES_PER_CLIENT,
        "rounds": rounds,
        "strategy": "fedper",
        "configs (registered, sampled)": s["configs"],
    }
    service = None
    runs: dict[tuple[int, int], Any] = {}
    for registered, sampled in s["configs"]:
        pairs = pairs_for(registered, sampled, rounds)
        _, service, _, _ = prefill(sim_config(pairs), work, service)
        runs[(registered, sampled)] = simulate_cli(
            pairs, work / f"sim-{registered}-{sampled}", pss=True
        )

    figures: dict[str, Any] = {}
    for (registered, sampled), sim in runs.items():
        key = f"n{registered}_m{sampled}"
        figures[key] = {
            "registered": registered,
            "sampled": sampled,
            "round_seconds": sim.steady_round,
            "round_seconds_all": sim.round_times,
            "round1_seconds": sim.round_elapsed.get(1),
            "engine_start_seconds": sim.engine_start,
            "startup_seconds": sim.summary.get("startup_seconds"),
            "command_seconds": sim.wall,
            "peak_rss_bytes": sim.peak_rss,
            "peak_pss_bytes": sim.peak_pss,
            "peak_processes": sim.peak_procs,
            "failures": sim.summary.get("failures"),
        }
        rep.rows.append(
            {
                "registered": registered,
                "sampled/round": sampled,
                "s/round": sim.steady_round,
                "s/round/sampled client": ratio(sim.steady_round, sampled),
                "round 1 s": sim.round_elapsed.get(1),
                "command s": sim.wall,
                "peak RSS GiB": sim.peak_rss / GIB,
                "peak PSS GiB": sim.peak_pss / GIB,
                "processes": sim.peak_procs,
            }
        )
    rep.figures = figures

    base = runs.get((BASE_SAMPLED, BASE_SAMPLED))
    widest = max(n for n, m in runs if m == BASE_SAMPLED)
    top = runs[(widest, BASE_SAMPLED)]
    q = ratio(top.steady_round, base.steady_round if base else None)
    rep.check(
        f"s/round, {widest} vs {BASE_SAMPLED} registered ({BASE_SAMPLED} sampled)",
        q,
        "<= 1.2",
        None if q is None else q <= 1.2,
    )
    gib = top.peak_rss / GIB
    rep.check(
        f"peak RSS (GiB), {widest} registered",
        gib,
        f"< {MEMORY_LIMIT_GIB:g}",
        gib < MEMORY_LIMIT_GIB,
    )
    if (100, 100) in runs and base is not None:
        per = ratio(
            ratio(runs[(100, 100)].steady_round, 100), ratio(base.steady_round, BASE_SAMPLED)
        )
        rep.check("s/sampled client, 100 vs 10 all sampled", per, "(reported)", None)
    rep.notes += [
        "Peak RSS sums every process's resident set (shared pages such as torch's libraries and "
        "Ray's object store count once per process: an upper bound); PSS shares them out (the "
        "tree's actual footprint). The memory target is checked on RSS.",
        f"Each client holds {IMAGES_PER_CLIENT} images (pool = {IMAGES_PER_CLIENT} x N, plus "
        f"{N_TEST} global test images); round 1 (Ray worker start, node registration) is "
        "excluded from s/round and shown as `round 1 s`.",
    ]
    return rep
