"""Issue 2: dataset loading offline: shapes, dtypes, normalisation, errors naming the offline choices."""

import gzip
import os
import struct

import numpy as np
import pytest

from amp_fl.data import datasets as ds


def test_mnist5k_is_real_mnist_offline():
    data = ds.load_dataset("mnist5k")
    assert data.train.images.shape == (4000, 1, 28, 28) and data.test.images.shape == (1000, 1, 28, 28)
    assert data.train.images.dtype == np.float32 and data.train.labels.dtype == np.int64
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    # Stratified fixed split: 400 / 100 per class, disjoint.
    assert np.bincount(data.train.labels).tolist() == [400] * 10
    assert np.bincount(data.test.labels).tolist() == [100] * 10
    # Standardised with MNIST's published mean/std: pixel 0 maps to -0.1307/0.3081.
    assert data.train.images.min() == pytest.approx(-0.1307 / 0.3081, abs=1e-5)
    assert data.train.images.max() == pytest.approx((1 - 0.1307) / 0.3081, abs=1e-5)
    assert abs(float(data.train.images.mean())) < 0.1 and 0.9 < float(data.train.images.std()) < 1.1


def test_offline_download_failure_names_the_offline_choices(tmp_path, monkeypatch):
    # No files under the root and download disabled: same path as a failed download.
    with pytest.raises(ds.DatasetUnavailableError, match="mnist5k") as info:
        ds.load_dataset("mnist", str(tmp_path / "empty"), False)
    assert "dataset-fashion-mnist" in str(info.value)


def test_fallback_is_loud_and_recorded(tmp_path):
    with pytest.warns(RuntimeWarning, match="DATASET FALLBACK"):
        resolved = ds.resolve_dataset("mnist", str(tmp_path / "none"), False, "mnist5k")
    assert (resolved.requested, resolved.used) == ("mnist", "mnist5k")
    assert "unavailable" in resolved.fallback_reason


def test_no_fallback_means_error(tmp_path):
    with pytest.raises(ds.DatasetUnavailableError):
        ds.resolve_dataset("mnist", str(tmp_path / "none"), False, None)


def _idx(path, magic, dims, payload):
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload)


def test_fashion_mnist_from_debian_package_layout(tmp_path, monkeypatch):
    # A miniature copy of /usr/share/datasets/fashion-mnist in the same IDX .gz format.
    debian = tmp_path / "debian"
    debian.mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 20), ("t10k", 10)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        _idx(debian / f"{split}-images-idx3-ubyte.gz", 2051, (n, 28, 28), images.tobytes())
        _idx(debian / f"{split}-labels-idx1-ubyte.gz", 2049, (n,), labels.tobytes())
    monkeypatch.setattr(ds, "DEBIAN_FASHION_MNIST", debian)
    ds.clear_dataset_cache()
    data = ds.load_dataset("fashion_mnist", str(tmp_path / "root"), False)
    assert data.train.images.shape == (20, 1, 28, 28) and data.test.images.shape == (10, 1, 28, 28)
    assert data.train.labels.tolist() == [i % 10 for i in range(20)]
    assert data.train.images.min() >= -0.2860 / 0.3530 - 1e-5
    ds.clear_dataset_cache()


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        ds.load_dataset("svhn")


def test_resolution_round_trip_and_mismatch(tmp_path):
    resolved = ds.ResolvedDataset("mnist", "mnist5k", "offline")
    ds.save_resolution(resolved, tmp_path / "dataset.json")
    assert ds.load_resolution(tmp_path / "dataset.json", "mnist") == resolved
    assert ds.load_resolution(tmp_path / "dataset.json", "cifar10") is None
    assert ds.load_resolution(tmp_path / "missing.json", "mnist") is None


def _miniature_debian(tmp_path, monkeypatch):
    debian = tmp_path / "debian"
    debian.mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 12), ("t10k", 6)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        _idx(debian / f"{split}-images-idx3-ubyte.gz", 2051, (n, 28, 28), images.tobytes())
        _idx(debian / f"{split}-labels-idx1-ubyte.gz", 2049, (n,), (np.arange(n) % 10).astype(np.uint8).tobytes())
    monkeypatch.setattr(ds, "DEBIAN_FASHION_MNIST", debian)
    ds.clear_dataset_cache()


def test_parsed_arrays_are_kept_for_the_next_process_and_give_the_same_dataset(tmp_path, monkeypatch):
    _miniature_debian(tmp_path, monkeypatch)
    root = tmp_path / "root"
    first = ds.load_dataset("fashion_mnist", str(root), False)
    cache = ds.parsed_cache_path("fashion_mnist", root)
    assert cache is not None and cache.exists() and cache.parent == root / ds.PARSED_CACHE_FOLDER
    ds.clear_dataset_cache()  # a new process: only the cache file is left

    def no_torchvision(*args):
        raise AssertionError("parsed again although the cache is there")

    monkeypatch.setattr(ds, "_parse_with_torchvision", no_torchvision)
    second = ds.load_dataset("fashion_mnist", str(root), False)
    for a, b in ((first.train, second.train), (first.test, second.test)):
        assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert not list(cache.parent.glob("*.tmp.npz"))
    ds.clear_dataset_cache()


def test_a_corrupt_or_outdated_parsed_cache_is_parsed_again(tmp_path, monkeypatch):
    _miniature_debian(tmp_path, monkeypatch)
    root = tmp_path / "root"
    reference = ds.load_dataset("fashion_mnist", str(root), False)
    cache = ds.parsed_cache_path("fashion_mnist", root)
    assert cache is not None
    cache.write_bytes(b"not a zip file")  # e.g. a crash while another process wrote it
    ds.clear_dataset_cache()
    again = ds.load_dataset("fashion_mnist", str(root), False)
    assert np.array_equal(again.train.images, reference.train.images)
    raw = root / "FashionMNIST" / "raw" / "train-labels-idx1-ubyte"
    os.utime(raw, ns=(0, 0))  # a replaced source file: a new cache name
    assert ds.parsed_cache_path("fashion_mnist", root) != cache
    ds.clear_dataset_cache()


def test_one_load_per_folder_whatever_its_spelling_or_download_flag(tmp_path, monkeypatch):
    _miniature_debian(tmp_path, monkeypatch)
    root = tmp_path / "root"
    first = ds.load_dataset("fashion_mnist", str(root), True)
    assert ds.load_dataset("fashion_mnist", str(root / ".." / "root"), False) is first
    ds.clear_dataset_cache()


def test_normalise_in_place_equals_the_out_of_place_formula():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    colour = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    for name, images in (("fashion_mnist", gray), ("cifar10", colour)):
        mean, std = (np.asarray(v, dtype=np.float32).reshape(1, -1, 1, 1) for v in ds.NORMALISATION[name])
        chw = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
        expected = (chw.astype(np.float32) / 255.0 - mean) / std
        got = ds._normalise(name, images)
        assert got.dtype == np.float32 and got.flags.c_contiguous and np.array_equal(got, expected)
