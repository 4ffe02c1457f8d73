"""The payload planner (beyond the paper): which payload format the cloud sends each device.

Devices differ in bandwidth, and a payload format (wire dtype x token pooling) trades bytes for
accuracy. Given each device's downlink (the `[link]` model), how many images it holds, a budget
and a measured accuracy per format, the planner picks each device's format:

* `plan.budget_seconds`: every device's one-time payload download must fit in this many seconds
  at its own downlink. Each device gets the most accurate format that fits (the fewest bytes
  among those within `plan.tolerance` of it), so fast devices are not held back by slow ones.
* `plan.budget_bytes`: all devices' payload downloads together. Devices start at the smallest
  format and are upgraded along the formats' upper hull of accuracy against bytes, the step that
  buys the most accuracy per byte first (the image-weighted accuracy is what is maximised, as
  in a fractional knapsack whose items are upgrade steps).

The one-format-for-all baseline (`single_format`) is the most accurate format every device can
take under the same budget. Formats a plan may mix share the gather, k and projection (so one
edge network fits all) and are derived from the cloud's cached payload (`miet_fed.cloud.payload`
`derive`). Pure numpy/pandas: no torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from miet_fed.comm.cost import DTYPE_BYTES
from miet_fed.errors import MietError

#: The measured accuracy table shipped with the package (configs/sweep_formats.toml's means).
BUILTIN_TABLE = Path(__file__).with_name("format_accuracy.toml")
_NAME = re.compile(r"(fp32|fp16|bf16|int8)(?:-p([1-9][0-9]*))?")


@dataclass(frozen=True)
class PayloadFormat:
    """A wire dtype and a token pooling: `int8-p2` is int8 with 2 x 2 pooling, `fp16` fp16 alone."""

    dtype: str
    token_pool: int = 1

    @property
    def name(self) -> str:
        return self.dtype if self.token_pool == 1 else f"{self.dtype}-p{self.token_pool}"

    @classmethod
    def parse(cls, text: str) -> PayloadFormat:
        m = _NAME.fullmatch(text.strip())
        if m is None:
            raise MietError(
                f"unknown payload format '{text}'; write DTYPE or DTYPE-pN (token pooling N x N), "
                f"DTYPE one of {', '.join(DTYPE_BYTES)}: e.g. int8-p2"
            )
        return cls(m.group(1), int(m.group(2) or 1))


def parse_formats(text: str) -> list[PayloadFormat]:
    """'fp32,int8,int8-p2' -> formats, in order, each named once."""
    names = [t.strip() for t in text.split(",") if t.strip()]
    formats = [PayloadFormat.parse(n) for n in names]
    seen = [f.name for f in formats]
    if len(set(seen)) != len(seen):
        raise MietError(f"plan.formats names a format twice: {text!r}")
    return formats


def check_formats_text(text: str) -> None:
    """plan.formats' check (config load): every name parses, none twice, at least one."""
    if text and not parse_formats(text):
        raise MietError(f"plan.formats names no format: {text!r}")


def check_derivable(fmt: PayloadFormat, base_dtype: str, base_pool: int) -> None:
    """A format the cloud can derive from its cached payload (base dtype and pooling) exactly
    as if it had been computed directly: a coarser pooling, and the base dtype or any dtype
    from an fp32 base."""
    if fmt.token_pool % base_pool:
        raise MietError(
            f"payload format {fmt.name} pools {fmt.token_pool} x {fmt.token_pool} but the cloud "
            f"caches model.token_pool={base_pool}; use pools that are multiples of it, or set "
            "model.token_pool=1"
        )
    if fmt.dtype != base_dtype and base_dtype != "fp32":
        raise MietError(
            f"payload format {fmt.name} needs {fmt.dtype} but the cloud caches {base_dtype}; "
            "set model.dtype=fp32 to plan several dtypes"
        )


def read_table(path: str | Path, names: list[str]) -> pd.DataFrame:
    """format -> accuracy (a fraction or a percentage) for every format in `names`, from a CSV
    with columns `format` and `accuracy` (`#` comment lines allowed)."""
    where = Path(path)
    if not where.is_file():
        raise MietError(f"plan.accuracy: no such file {where}; give a CSV of format,accuracy")
    if where == BUILTIN_TABLE:  # TOML: the files Flower packs into an app include it
        import tomllib

        acc = tomllib.loads(where.read_text())["accuracy"]
        table = pd.DataFrame({"format": list(acc), "accuracy": list(acc.values())})
    else:
        table = _read_csv(where)
    return _checked(table, where, names)


def _read_csv(where: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(where, comment="#")
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise MietError(f"plan.accuracy: cannot read {where} as CSV ({exc})") from None


def _checked(table: pd.DataFrame, where: Path, names: list[str]) -> pd.DataFrame:
    if not {"format", "accuracy"} <= set(table.columns):
        raise MietError(f"plan.accuracy: {where} needs the columns format and accuracy")
    table = table.assign(format=table["format"].astype(str).str.strip())
    acc = pd.to_numeric(table["accuracy"], errors="coerce")
    if acc.isna().any() or table["format"].duplicated().any():
        raise MietError(f"plan.accuracy: {where} needs one numeric accuracy per format")
    lacking = [n for n in names if n not in set(table["format"])]
    if lacking:
        raise MietError(
            f"plan.accuracy: {where} has no accuracy for {', '.join(lacking)}; measure it "
            "(configs/sweep_formats.toml) or leave the format out of plan.formats"
        )
    return pd.DataFrame({"format": table["format"], "accuracy": acc}).set_index("format")


def format_table(
    names: list[str], bytes_per_image: list[int], accuracy: pd.DataFrame
) -> pd.DataFrame:
    """The planner's input: one row per format (bytes per image, measured accuracy)."""
    return pd.DataFrame(
        {
            "format": names,
            "bytes_per_image": np.asarray(bytes_per_image, dtype=np.int64),
            "accuracy": [float(accuracy.loc[n, "accuracy"]) for n in names],
        }
    )


def _seconds(images: np.ndarray, down_bps: np.ndarray, bytes_per_image: np.ndarray) -> np.ndarray:
    """[devices, formats] one-time download seconds."""
    return 8.0 * np.outer(images, bytes_per_image) / np.asarray(down_bps, dtype=float)[:, None]


def _fits(
    images: np.ndarray, down_bps: np.ndarray, size: np.ndarray, budget_seconds: float
) -> np.ndarray:
    """[devices, formats]: which format each device can download within budget_seconds
    (0 = no limit: every format)."""
    if budget_seconds <= 0:
        return np.ones((len(images), len(size)), dtype=bool)
    return _seconds(images, down_bps, size) <= budget_seconds * (1 + 1e-12)


def plan_formats(
    images: np.ndarray,
    down_bps: np.ndarray,
    table: pd.DataFrame,
    budget_seconds: float = 0.0,
    budget_bytes: float = 0.0,
    tolerance: float = 0.0,
) -> np.ndarray:
    """Each device's format name (see the module docstring); 0 = no such budget. Accuracies
    within `tolerance` of the best a device can take count as equal: the fewest bytes win."""
    images = np.asarray(images, dtype=np.int64)
    size = table["bytes_per_image"].to_numpy(dtype=np.int64)
    acc = table["accuracy"].to_numpy(dtype=float)
    names = table["format"].to_numpy()
    fits = _fits(images, down_bps, size, budget_seconds)
    if not fits.any(axis=1).all():
        worst = float(_seconds(images, down_bps, size).min(axis=1).max())
        raise MietError(
            f"plan.budget_seconds={budget_seconds:g}: no format fits the slowest device "
            f"(it needs {worst:.3g} s with the smallest format); raise the budget to at least "
            "that or add a smaller format to plan.formats"
        )
    best = np.array([_best(fits[d], acc, size, tolerance) for d in range(len(images))], np.int64)
    if budget_bytes > 0:
        best = _within_total(images, size, acc, fits, best, budget_bytes)
    return names[best]


def _best(ok: np.ndarray, acc: np.ndarray, size: np.ndarray, tolerance: float) -> int:
    """The most accurate allowed format, the fewest bytes among those within `tolerance`."""
    allowed = np.flatnonzero(ok)
    top = acc[allowed].max()
    near = allowed[acc[allowed] >= top - tolerance - 1e-12]
    return int(min(near, key=lambda j: (size[j], -acc[j])))


def _within_total(
    images: np.ndarray,
    size: np.ndarray,
    acc: np.ndarray,
    fits: np.ndarray,
    ceiling: np.ndarray,
    budget: float,
) -> np.ndarray:
    """Start every device at its smallest fitting format; upgrade along the hull, best accuracy
    per byte first, never past a device's `ceiling` (its best fitting format)."""
    hull = _hull(size, acc)
    smallest = np.array([next(j for j in hull if fits[d, j]) for d in range(len(images))])
    choice = smallest.copy()
    spent = float(np.sum(images * size[choice]))
    if spent > budget:
        raise MietError(
            f"plan.budget_bytes={budget:g}: the smallest formats alone need {spent:,.0f} bytes; "
            "raise the budget or add a smaller format to plan.formats"
        )
    steps = []  # (accuracy per byte, hull position) of each upgrade step, best first
    for a, b in zip(hull, hull[1:], strict=False):
        steps.append(((acc[b] - acc[a]) / (size[b] - size[a]), a, b))
    steps.sort(key=lambda s: -s[0])
    for _, a, b in steps:
        for d in np.argsort(images, kind="stable"):  # small devices first: more devices per byte
            if choice[d] != a or not fits[d, b] or acc[b] > acc[ceiling[d]]:
                continue
            extra = float(images[d] * (size[b] - size[a]))
            if spent + extra <= budget:
                choice[d], spent = b, spent + extra
    return choice


def _hull(size: np.ndarray, acc: np.ndarray) -> list[int]:
    """Indices of the formats on the upper concave hull of accuracy against bytes, by bytes:
    a format that another beats with fewer bytes, or that a mix of two neighbours beats, is
    never worth upgrading to."""
    order = sorted(range(len(size)), key=lambda j: (size[j], -acc[j]))
    front: list[int] = []
    for j in order:  # Pareto front: strictly more accurate as bytes grow
        if not front or acc[j] > acc[front[-1]]:
            front.append(j)
    hull: list[int] = []
    for j in front:
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            # b lies under the segment a..j: drop it
            if (acc[b] - acc[a]) * (size[j] - size[a]) <= (acc[j] - acc[a]) * (size[b] - size[a]):
                hull.pop()
            else:
                break
        hull.append(j)
    return hull


def single_format(
    images: np.ndarray,
    down_bps: np.ndarray,
    table: pd.DataFrame,
    budget_seconds: float = 0.0,
    budget_bytes: float = 0.0,
    tolerance: float = 0.0,
) -> str:
    """The one-format-for-all baseline: the most accurate format every device can take under
    the budget (the fewest bytes among those within `tolerance` of it)."""
    images = np.asarray(images, dtype=np.int64)
    size = table["bytes_per_image"].to_numpy(dtype=np.int64)
    ok = _fits(images, down_bps, size, budget_seconds).all(axis=0)
    if budget_bytes > 0:
        ok &= images.sum() * size <= budget_bytes
    if not ok.any():
        raise MietError("no single payload format meets the budget for every device")
    acc = table["accuracy"].to_numpy(dtype=float)
    return str(table["format"].iloc[_best(ok, acc, size, tolerance)])


def plan_frame(
    images: np.ndarray, down_bps: np.ndarray, chosen: np.ndarray, table: pd.DataFrame
) -> pd.DataFrame:
    """plan.csv: one row per device (its format, bytes, download seconds, planned accuracy)."""
    info = table.set_index("format")
    per_image = info.loc[chosen, "bytes_per_image"].to_numpy(dtype=np.int64)
    images = np.asarray(images, dtype=np.int64)
    return pd.DataFrame(
        {
            "client": np.arange(len(images)),
            "format": chosen,
            "images": images,
            "down_mbps": np.asarray(down_bps, dtype=float) / 1e6,
            "feature_bytes": images * per_image,
            "download_seconds": 8.0 * images * per_image / np.asarray(down_bps, dtype=float),
            "planned_accuracy": info.loc[chosen, "accuracy"].to_numpy(dtype=float),
        }
    )
