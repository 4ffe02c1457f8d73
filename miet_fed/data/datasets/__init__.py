"""Image datasets as plain uint8 arrays: built-ins registered by name, one file each in this
package, plus your own data (`npz:PATH`, `folder:PATH`, `miet_fed.data.user`).

A dataset is a function returning an `ImageDataset`, registered with `@DATASETS.register(name)`
(in this package, or in a plugin file: `--plugin PATH`). Everything here is numpy + PIL +
stdlib, so that data loading never pays for torch or Flower; the dataset packages themselves
are imported lazily inside their loaders. User files are never unpickled.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from miet_fed.data.base import ImageDataset
from miet_fed.data.idx import read_idx
from miet_fed.data.user import load_folder, load_npz
from miet_fed.errors import MietError
from miet_fed.registry import Registry

USER_FORMS = ("npz:PATH", "folder:PATH")
_LOADERS = (("npz:", load_npz), ("folder:", load_folder))

DATASETS: Registry[Callable[[], ImageDataset]] = Registry("dataset", __name__)


def check_dataset_name(spec: str) -> None:
    """A registered name, or a user form with a path; what is wrong otherwise (the config checks
    this before anything is loaded)."""
    spec = spec.strip()
    if "\x00" in spec:
        raise MietError(f"dataset {spec!r} contains a NUL byte; check the path")
    for prefix, _ in _LOADERS:
        if spec.startswith(prefix):
            if not spec[len(prefix) :]:
                raise MietError(f"dataset spec '{spec}' has no path; write {prefix}PATH")
            return
    if spec in DATASETS:
        return
    hint = ""
    p = Path(spec).expanduser()
    if p.is_dir():
        hint = f" (did you mean folder:{spec}?)"
    elif p.is_file():
        hint = f" (did you mean npz:{spec}?)"
    raise MietError(
        f"unknown dataset '{spec}'{hint}; valid: {', '.join(DATASETS.names())}, "
        f"or your own data as {' or '.join(USER_FORMS)}"
    )


def load_dataset(spec: str) -> ImageDataset:
    """Resolve a dataset spec: a built-in name, `npz:PATH` or `folder:PATH`."""
    check_dataset_name(spec)
    spec = spec.strip()
    for prefix, loader in _LOADERS:
        if spec.startswith(prefix):
            return loader(spec[len(prefix) :])
    return DATASETS.get(spec)()


__all__ = [
    "DATASETS",
    "USER_FORMS",
    "ImageDataset",
    "check_dataset_name",
    "load_dataset",
    "load_folder",
    "load_npz",
    "read_idx",
]
