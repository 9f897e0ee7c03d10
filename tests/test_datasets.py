"""Dataset loaders on tiny real or hand-made data, and their one-line errors."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from support import compose
from distillkit.data import datasets
from distillkit.data.datasets import load_dataset
from distillkit.errors import UserError


def write_idx(path, array: np.ndarray):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def tiny_idx_folder(folder, n_train=20, n_test=10):
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 255, (n_train, 28, 28)))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(n_train) % 10)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 255, (n_test, 28, 28)))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(n_test) % 10)


def test_digits_is_stratified_and_normalised():
    data = load_dataset(compose().dataset)
    assert data.train_images.shape[1:] == (1, 8, 8) and data.num_classes == 10
    assert len(data.train_labels) + len(data.test_labels) == 1797
    counts = torch.bincount(data.test_labels)
    assert counts.min() >= 40 and counts.max() <= 50
    assert abs(float(data.train_images.mean())) < 1e-4 and abs(float(data.train_images.std()) - 1) < 1e-3


def test_fashion_mnist_reads_idx_from_root(tmp_path):
    tiny_idx_folder(tmp_path)
    data = load_dataset(compose("dataset=fashion_mnist", f"dataset.root={tmp_path}").dataset)
    assert data.train_images.shape == (20, 1, 28, 28) and data.test_images.shape == (10, 1, 28, 28)
    assert data.classes[0] == "T-shirt/top" and data.train_labels.tolist()[:3] == [0, 1, 2]


def test_fashion_mnist_missing_everywhere_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "FASHION_MNIST_SYSTEM_ROOT", tmp_path / "absent")
    cfg = compose("dataset=fashion_mnist", f"dataset.root={tmp_path}", "dataset.download=false").dataset
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        load_dataset(cfg)


def test_truncated_idx_is_a_user_error(tmp_path):
    tiny_idx_folder(tmp_path)
    with gzip.open(tmp_path / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 8, 3) + struct.pack(">III", 20, 28, 28) + b"\0" * 100)
    with pytest.raises(UserError, match="truncated"):
        load_dataset(compose("dataset=fashion_mnist", f"dataset.root={tmp_path}").dataset)


def test_torchvision_dataset_without_download_is_one_line(tmp_path):
    cfg = compose("dataset=cifar10", f"dataset.download_root={tmp_path}", "dataset.download=false").dataset
    with pytest.raises(UserError, match="not found under"):
        load_dataset(cfg)


def _png_tree(root, split, classes, per_class):
    for c, cls in enumerate(classes):
        (root / split / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(np.full((10, 12, 3), 20 * c + i, np.uint8)).save(root / split / cls / f"{i}.png")


def test_imagefolder_reads_class_folders(tmp_path):
    _png_tree(tmp_path, "train", ["cat", "dog"], 3)
    _png_tree(tmp_path, "val", ["cat", "dog"], 2)
    data = load_dataset(compose("dataset=imagefolder", f"dataset.root={tmp_path}", "dataset.image_size=16").dataset)
    assert data.train_images.shape == (6, 3, 16, 16) and data.test_images.shape == (4, 3, 16, 16)
    assert data.classes == ["cat", "dog"] and data.train_labels.tolist() == [0, 0, 0, 1, 1, 1]


def test_tinyimagenet_val_annotations_are_understood(tmp_path):
    _png_tree(tmp_path, "train", ["n01", "n02"], 2)
    (tmp_path / "val" / "images").mkdir(parents=True)
    lines = []
    for i, cls in enumerate(["n01", "n02", "n02"]):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "val" / "images" / f"v{i}.png")
        lines.append(f"v{i}.png\t{cls}\t0\t0\t8\t8")
    (tmp_path / "val" / "val_annotations.txt").write_text("\n".join(lines))
    data = load_dataset(compose("dataset=tinyimagenet", f"dataset.root={tmp_path}", "dataset.image_size=8").dataset)
    assert data.test_labels.tolist() == [0, 1, 1]


def test_imagefolder_without_root_says_how_to_get_it(tmp_path):
    with pytest.raises(UserError, match="imagewoof"):
        load_dataset(compose("dataset=imagewoof", f"dataset.root={tmp_path}").dataset)


def test_torchvision_loader_reads_a_local_mnist_copy(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    tiny_idx_folder(raw)
    for gz in raw.glob("*.gz"):  # torchvision's MNIST reads the uncompressed files
        (raw / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    data = load_dataset(compose("dataset=mnist", f"dataset.download_root={tmp_path}", "dataset.download=false").dataset)
    assert data.train_images.shape == (20, 1, 28, 28) and data.test_labels.tolist()[:3] == [0, 1, 2]
    assert data.classes[0].startswith("0")
