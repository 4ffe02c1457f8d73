"""Datasets (built-in and user-supplied) as uint8 arrays, and VTAB-1K-like train/test selection."""

from miet_fed.data.datasets import (
    DATASETS,
    ImageDataset,
    load_dataset,
    load_folder,
    load_npz,
    read_idx,
)
from miet_fed.data.selection import Split, stratified_sample, vtab_split

__all__ = [
    "DATASETS",
    "ImageDataset",
    "Split",
    "load_dataset",
    "load_folder",
    "load_npz",
    "read_idx",
    "stratified_sample",
    "vtab_split",
]
