"""A run's payload plan: the planner (`miet_fed.comm.planner`) applied to this federation's
devices, links and formats, before any backbone work, so a budget no format meets is a one-line
error and nothing starts. The plan is written to the run folder as `plan.csv`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from miet_fed.cloud.service import payload_info
from miet_fed.comm import planner
from miet_fed.comm.link import client_links
from miet_fed.config import SimulateConfig
from miet_fed.errors import MietError


@dataclass(frozen=True)
class Plan:
    formats: tuple[str, ...]  # per device: its format, '' where it is the cloud's cached one
    frame: pd.DataFrame  # plan.csv
    baseline: str  # the best single format for every device under the same budget


def base_format(cfg: SimulateConfig) -> str:
    """The name of the format the cloud caches (model.dtype, model.token_pool)."""
    return planner.PayloadFormat(cfg.model.dtype, cfg.model.token_pool).name


def make_plan(cfg: SimulateConfig, images: Sequence[int]) -> Plan | None:
    """Each device's format under plan.* (None without plan.formats); `images[d]` is how many
    images device d holds (train + test), each downloaded once."""
    p = cfg.plan
    if not p.formats:
        return None
    formats = planner.parse_formats(p.formats)
    for fmt in formats:
        planner.check_derivable(fmt, cfg.model.dtype, cfg.model.token_pool)
    names = [f.name for f in formats]
    sizes = [_bytes_per_image(cfg, n) for n in names]
    accuracy = planner.read_table(p.accuracy or planner.BUILTIN_TABLE, names)
    table = planner.format_table(names, sizes, accuracy)
    link = cfg.link
    down = client_links(
        cfg.fed.num_clients, link.up_mbps, link.down_mbps, link.spread, cfg.run.seed
    )["down_bps"].to_numpy()
    counts = np.asarray(images, dtype=np.int64)
    budget = {
        "budget_seconds": p.budget_seconds,
        "budget_bytes": p.budget_bytes,
        "tolerance": p.tolerance,
    }
    chosen = planner.plan_formats(counts, down, table, **budget)
    try:
        baseline = planner.single_format(counts, down, table, **budget)
    except MietError:  # no single format fits every device: the plan still does
        baseline = ""
    base = base_format(cfg)
    return Plan(
        formats=tuple("" if c == base else str(c) for c in chosen),
        frame=planner.plan_frame(counts, down, chosen, table),
        baseline=baseline,
    )


def _bytes_per_image(cfg: SimulateConfig, name: str) -> int:
    """One image's payload bytes in format `name` (checks that its pooling fits the grid)."""
    try:
        return payload_info(cfg.model, name)[2]
    except MietError as exc:  # the check speaks of model.token_pool: say which format
        text = str(exc).replace("model.token_pool=", "the token pool ")
        raise MietError(f"plan.formats {name}: {text}") from None


def feature_bytes_by_format(cfg: SimulateConfig, formats: Sequence[str]) -> dict[str, int]:
    """Format name ('' = cached) -> bytes per image, for the formats a run's devices use."""
    return {f: payload_info(cfg.model, f)[2] for f in {"", *formats}}
