"""Payload formats: token pooling and a low-rank channel projection, applied in the cloud after
the gather and before encoding, so the cache and the wire hold the smaller payload.

* Pooling (`model.token_pool` = p) averages each p x p block of the patch grid of every token
  map; the prefix tokens (CLS, registers) are kept as they are.
* Projection (`model.proj_rank` = r) maps the channel dimension d to r with a fixed PCA basis:
  y = (x - mean) @ V[:, :r], V orthonormal. The basis is fitted once on the gathered (and
  pooled) features of `model.proj_sample` images drawn with a fixed seed from the whole
  dataset, whatever a run selects: in MIET the cloud receives every image anyway, so fitting on
  them reveals nothing new to it. It is stored in `<cache>/bases/<key digest>.safetensors`
  (tensors, a sha256 checksum bound to the key, an atomic write; never a pickle); a damaged
  file is refitted. Its key holds every setting that changes the gathered features plus the
  sample, not the rank or the dtype, so every rank and dtype reuse one basis.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from miet_fed.cloud.cache import _tensor_digest, key_digest
from miet_fed.errors import MietError
from miet_fed.files import atomic_write

#: The seed that draws the basis's image sample (fixed: the basis belongs to the dataset and
#: the cloud's settings, not to a run).
PROJ_SEED = 0


def pool_grid(x: torch.Tensor, prefix: int, pool: int) -> torch.Tensor:
    """[..., T, D] -> [..., prefix + (G/p)^2, D]: each p x p block of the G x G patch grid
    (row-major after the prefix tokens, as timm lays it out) averaged into one token."""
    if pool == 1:
        return x
    *lead, tokens, dim = x.shape
    side = int(round((tokens - prefix) ** 0.5))
    g = side // pool
    grid = x[..., prefix:, :].reshape(*lead, g, pool, g, pool, dim)
    pooled = grid.mean(dim=(-4, -2)).reshape(*lead, g * g, dim)
    return torch.cat([x[..., :prefix, :], pooled.to(x.dtype)], dim=-2)


def sample_ids(n_images: int, sample: int, seed: int = PROJ_SEED) -> np.ndarray:
    """The sorted image ids the basis is fitted on: `sample` of all images, seeded."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_images, size=min(sample, n_images), replace=False))


def fit_pca(rows: Callable[[], Iterable[torch.Tensor]]) -> dict[str, torch.Tensor]:
    """PCA of feature rows (each tensor [..., D], flattened to rows of D; streamed, only the
    D x D sums are kept): the mean, every
    component as a column of an orthonormal [D, D] matrix sorted by variance, and the
    variances. Signs are fixed (each column's largest entry positive) so a refit is equal."""
    total, outer, count = None, None, 0
    for x in rows():
        x = x.reshape(-1, x.shape[-1]).double()
        total = x.sum(0) if total is None else total + x.sum(0)
        outer = x.T @ x if outer is None else outer + x.T @ x
        count += x.shape[0]
    if total is None or count == 0:
        raise MietError("no images to fit the projection basis on")
    mean = total / count
    cov = outer / count - torch.outer(mean, mean)
    values, vectors = torch.linalg.eigh((cov + cov.T) / 2)
    order = torch.argsort(values, descending=True)
    values, vectors = values[order].clamp_min(0), vectors[:, order]
    peak = vectors.abs().argmax(dim=0)
    signs = torch.sign(vectors[peak, torch.arange(vectors.shape[1])])
    vectors = vectors * torch.where(signs == 0, 1.0, signs).to(vectors.dtype)
    return {
        "mean": mean.float().contiguous(),
        "components": vectors.float().contiguous(),
        "variances": values.float().contiguous(),
    }


def project(x: torch.Tensor, basis: dict[str, torch.Tensor], rank: int) -> torch.Tensor:
    """[..., D] -> [..., rank]: centred, then onto the first `rank` principal components."""
    return (x.float() - basis["mean"]) @ basis["components"][:, :rank]


class BasisStore:
    """The projection basis of one key on disk: read and checked, or fitted and written."""

    def __init__(self, root: Path, key: dict) -> None:
        self.key = dict(key)
        self.digest = key_digest({**key, "what": "pca-basis"})
        self.path = Path(root) / "bases" / f"{self.digest}.safetensors"
        self.fits = 0  # times this store fitted a basis (0 when read from disk)
        self.discarded = 0  # damaged files deleted and refitted
        self._basis: dict[str, torch.Tensor] | None = None

    def _read(self) -> dict[str, torch.Tensor] | None:
        """The stored basis, or None when missing or damaged (then deleted)."""
        if not self.path.is_file():
            return None
        try:
            with safe_open(str(self.path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        except SafetensorError:
            tensors, meta = {}, {}
        except FileNotFoundError:  # removed by a concurrent run since the check
            return None
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            raise MietError(f"cannot read the projection basis {self.path} ({why})") from None
        if meta.get("key") == self.digest and meta.get("sha256") == _tensor_digest(
            tensors, self.digest
        ):
            return tensors
        self.path.unlink(missing_ok=True)
        self.discarded += 1
        print(
            f"projection basis {self.path} failed its checksum; deleted, fitting it again",
            file=sys.stderr,
        )
        return None

    def get(self, fit: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """The basis: from memory, from disk if intact, else `fit()` and written atomically."""
        if self._basis is None:
            basis = self._read()
            if basis is None:
                basis = fit()
                self.fits += 1
                self._write(basis)
            self._basis = basis
        return self._basis

    def _write(self, basis: dict[str, torch.Tensor]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "key": self.digest,
            "sha256": _tensor_digest(basis, self.digest),
            "settings": json.dumps(self.key, sort_keys=True),
        }
        try:
            atomic_write(self.path, lambda tmp: save_file(basis, str(tmp), metadata=meta))
        except (OSError, SafetensorError) as exc:
            why = getattr(exc, "strerror", None) or exc
            raise MietError(
                f"cannot write the projection basis {self.path} ({why}); free space or point "
                "MIET_FED_CACHE at another folder"
            ) from None


def derive(
    parts: dict[str, torch.Tensor], prefix: int, pool: int, dtype: str
) -> dict[str, torch.Tensor]:
    """Another payload format from the cached one (a planned device's own format): decoded,
    pooled a further `pool` x `pool` (an average of averages of equal blocks: the same as
    pooling the gathered map directly) and encoded in `dtype`. From an fp32 cache this is
    the payload a run with that format would have cached, up to float rounding
    (`planner.check_derivable` says which formats qualify)."""
    from miet_fed.comm import codec

    x = codec.decode(parts)
    if pool != 1:
        x = pool_grid(x, prefix, pool)
    return codec.encode(x, dtype)
