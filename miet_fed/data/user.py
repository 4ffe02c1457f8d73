"""Your own data: `npz:PATH` (arrays x and y, never unpickled) and `folder:PATH` (one
sub-folder of images per class, decoded by PIL with every mode scaled by its true range)."""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from miet_fed.data.base import ImageDataset, short_hash
from miet_fed.errors import MietError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


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
        fingerprint=short_hash("npz", _file_sha256(path)),
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
        fingerprint=short_hash("folder", "decode-2", sorted(stats)),  # decode-2: true ranges
    )
