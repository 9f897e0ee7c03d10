"""The photo-patches builder on tiny builds: layout, held-out strip, determinism, reuse, errors."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from support import compose
from distillkit.data import photo_patches
from distillkit.data.datasets import load_dataset
from distillkit.data.photo_patches import build_root, ensure_built
from distillkit.errors import UserError
from distillkit.run import execute

RED, GREEN = (255, 0, 0), (0, 255, 0)


def tiny(root, *overrides):
    """A three-photo build (two from scikit-image, one from scikit-learn) of a few 16×16 crops."""
    return compose("dataset=photo_patches", f"dataset.download_root={root}", "dataset.photos=[chelsea,coffee,china]",
                   "dataset.image_size=16", "dataset.train_crops=4", "dataset.test_crops=2", *overrides)


def marked_photo() -> np.ndarray:
    """Red outside the default held-out strip (columns 75–124 of 200), green inside it."""
    photo = np.zeros((120, 200, 3), np.uint8)
    photo[:] = RED
    photo[:, 75:125] = GREEN
    return photo


def pixels(folder):
    return np.concatenate([np.asarray(Image.open(p)).reshape(-1, 3) for p in sorted(folder.glob("*.png"))])


def test_builds_one_rgb_class_folder_per_photo(tmp_path):
    root = ensure_built(tiny(tmp_path).dataset)
    for split, count in (("train", 4), ("test", 2)):
        assert sorted(p.name for p in (root / split).iterdir()) == ["chelsea", "china", "coffee"]
        files = sorted((root / split / "coffee").iterdir())
        assert len(files) == count
        with Image.open(files[0]) as img:
            assert img.mode == "RGB" and img.size == (16, 16)
    assert not list(tmp_path.glob("*.tmp-*"))  # the temporary build folder was renamed, none left behind


def test_loads_through_the_image_folder_reader_in_photos_order(tmp_path):
    data = load_dataset(tiny(tmp_path).dataset)
    assert data.train_images.shape == (12, 3, 16, 16) and data.test_images.shape == (6, 3, 16, 16)
    assert data.classes == ["chelsea", "coffee", "china"] and data.train_labels.tolist()[:5] == [0, 0, 0, 0, 1]


def test_train_and_test_crops_come_from_disjoint_strips(tmp_path, monkeypatch):
    monkeypatch.setitem(photo_patches.PHOTO_SOURCES, "marked", marked_photo)
    root = ensure_built(tiny(tmp_path, "dataset.photos=[marked]", "dataset.train_crops=40",
                             "dataset.test_crops=20").dataset)
    assert (pixels(root / "train" / "marked") == RED).all()
    assert (pixels(root / "test" / "marked") == GREEN).all()


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    first = ensure_built(tiny(tmp_path / "a").dataset)
    again = ensure_built(tiny(tmp_path / "b").dataset)
    reseeded = ensure_built(tiny(tmp_path / "c", "dataset.build_seed=1").dataset)
    files = sorted(p.relative_to(first) for p in first.rglob("*.png"))
    assert files == sorted(p.relative_to(again) for p in again.rglob("*.png"))
    assert all((first / f).read_bytes() == (again / f).read_bytes() for f in files)
    assert any((first / f).read_bytes() != (reseeded / f).read_bytes() for f in files)


def test_an_existing_build_is_reused_and_new_settings_build_anew(tmp_path, monkeypatch):
    cfg = tiny(tmp_path).dataset
    root = ensure_built(cfg)

    def unavailable(name):
        raise AssertionError(f"rebuilt: read photo {name}")

    monkeypatch.setattr(photo_patches, "read_photo", unavailable)
    assert ensure_built(cfg) == root and len(load_dataset(cfg).train_labels) == 12
    assert build_root(tiny(tmp_path, "dataset.train_crops=5").dataset) != root


def test_missing_source_package_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)  # as if scikit-image were not installed
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(UserError, match="pip install scikit-image") as err:
        load_dataset(tiny(tmp_path).dataset)
    assert "\n" not in str(err.value) and "chelsea" in str(err.value)
    assert not list(tmp_path.iterdir())  # nothing half-built left behind


def test_unknown_photo_names_the_choices(tmp_path):
    with pytest.raises(UserError, match="unknown photo 'lena'.*astronaut"):
        ensure_built(tiny(tmp_path, "dataset.photos=[chelsea,lena]").dataset)


def test_smoke_run_end_to_end(tmp_path):
    cfg = tiny(tmp_path / "data", "budget=smoke", "tracker=none", "method=random", "ipc=2")
    results = execute(cfg, tmp_path / "run")
    assert results["dataset"] == "photo_patches" and 0 <= results["accuracy"]["mean"] <= 100
