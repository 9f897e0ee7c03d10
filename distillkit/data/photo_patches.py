"""Build a class-per-folder RGB dataset from photographs that ship inside installed packages.

Class = source photograph; sample = a random square crop (random side, random horizontal flip)
resized to ``image_size`` and written as a PNG. A vertical strip of every photo (``test_strip``,
in fractions of its width) is held out: test crops lie wholly inside it and train crops wholly
outside, so no test pixel is ever seen in training. The tree is built once, atomically, under
``download_root/photo_patches-<hash of the build settings>``; later loads reuse it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
from PIL import Image
from pydantic import Field

from distillkit.errors import UserError
from distillkit.validation import ConfigError, Int, PositiveInt, UnitInterval


def _skimage_photo(name: str):
    def read() -> np.ndarray:
        import skimage.data

        return getattr(skimage.data, name)()
    return read


def _sklearn_photo(filename: str):
    def read() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)
    return read


# Colour photographs bundled in the scikit-image wheel (no download) and in scikit-learn.
PHOTO_SOURCES = {
    "astronaut": _skimage_photo("astronaut"),
    "chelsea": _skimage_photo("chelsea"),
    "coffee": _skimage_photo("coffee"),
    "rocket": _skimage_photo("rocket"),
    "immunohistochemistry": _skimage_photo("immunohistochemistry"),
    "hubble_deep_field": _skimage_photo("hubble_deep_field"),
    "retina": _skimage_photo("retina"),
    "china": _sklearn_photo("china.jpg"),
    "flower": _sklearn_photo("flower.jpg"),
}

SPLIT_STREAMS = {"train": 0, "test": 1}  # separate random streams, so test crops do not move with train_crops


def build_settings(cfg) -> dict:
    """Every setting that changes the built images (the build folder is named by their hash)."""
    return {
        "photos": list(cfg.photos),
        "image_size": int(cfg.image_size),
        "train_crops": int(cfg.train_crops),
        "test_crops": int(cfg.test_crops),
        "crop_scale": [float(v) for v in cfg.crop_scale],
        "test_strip": [float(v) for v in cfg.test_strip],
        "build_seed": int(cfg.build_seed),
    }


def build_root(cfg) -> Path:
    settings = build_settings(cfg)
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cfg.download_root).expanduser() / f"photo_patches-{digest}"


def read_photo(name: str) -> np.ndarray:
    """One source photograph as H×W×3 uint8; a missing package or file is one line."""
    if name not in PHOTO_SOURCES:
        raise UserError(f"unknown photo '{name}' in dataset.photos (choose from: {', '.join(PHOTO_SOURCES)})")
    try:
        return PHOTO_SOURCES[name]()
    except (ImportError, OSError) as err:  # package missing, or a file it lacks that it would have to download
        raise UserError(f"photo '{name}' is unavailable ({type(err).__name__}: {str(err).splitlines()[0]}); "
                        "it ships inside scikit-image / scikit-learn: pip install scikit-image scikit-learn") from None


def strip_columns(width: int, strip) -> tuple[int, int]:
    """The held-out strip as pixel columns [start, end)."""
    return round(strip[0] * width), round(strip[1] * width)


def allowed_left_edges(width: int, side: int, strip: tuple[int, int], split: str) -> np.ndarray:
    """Left edges x for which columns [x, x + side) lie wholly inside (test) or outside (train) the strip."""
    start, end = strip
    if split == "test":
        return np.arange(start, end - side + 1)
    return np.concatenate([np.arange(0, start - side + 1), np.arange(end, width - side + 1)])


def widest_fitting_side(width: int, strip: tuple[int, int], split: str) -> int:
    """The largest crop side that the split's columns can hold."""
    start, end = strip
    return end - start if split == "test" else max(start, width - end)


def random_crop(photo: np.ndarray, rng: np.random.Generator, cfg, strip, split: str) -> np.ndarray:
    height, width = photo.shape[:2]
    low, high = cfg.crop_scale
    side = round(rng.uniform(low, high) * min(height, width))
    side = max(1, min(side, height, widest_fitting_side(width, strip, split)))
    x = int(rng.choice(allowed_left_edges(width, side, strip, split)))
    y = int(rng.integers(0, height - side + 1))
    crop = photo[y:y + side, x:x + side]
    return crop[:, ::-1] if rng.random() < 0.5 else crop


def write_split(photo: np.ndarray, name: str, split: str, count: int, cfg, folder: Path) -> None:
    rng = np.random.default_rng([int(cfg.build_seed), zlib.crc32(name.encode()), SPLIT_STREAMS[split]])
    strip = strip_columns(photo.shape[1], cfg.test_strip)
    size = int(cfg.image_size)
    (folder / split / name).mkdir(parents=True)
    for i in range(count):
        crop = Image.fromarray(np.ascontiguousarray(random_crop(photo, rng, cfg, strip, split)))
        crop.resize((size, size), Image.LANCZOS).save(folder / split / name / f"{i:04d}.png")


@dataclass
class BuildSettings:
    """The types and ranges of the build keys (``conf/dataset/photo_patches.yaml``)."""

    photos: list[str]
    train_crops: PositiveInt
    test_crops: PositiveInt
    crop_scale: Annotated[list[UnitInterval], Field(min_length=2, max_length=2)]
    test_strip: Annotated[list[UnitInterval], Field(min_length=2, max_length=2)]
    build_seed: Int


def check_settings(cfg) -> None:
    """What the build keys' types (``BuildSettings``, checked before) cannot say."""
    unknown = [p for p in cfg.photos if p not in PHOTO_SOURCES]
    if unknown:
        raise ConfigError("dataset.photos", f"unknown photo {unknown[0]!r} (choose from {', '.join(PHOTO_SOURCES)})")
    low, high = cfg.crop_scale
    start, end = cfg.test_strip
    if not 0 < low <= high:
        raise ConfigError("dataset.crop_scale", f"must be [low, high] with 0 < low <= high <= 1, got {list(cfg.crop_scale)}")
    if not start < end or (start == 0 and end == 1):
        raise ConfigError("dataset.test_strip", "must be [start, end] inside [0, 1] leaving room for train crops, "
                          f"got {list(cfg.test_strip)}")


def ensure_built(cfg) -> Path:
    """The built tree's root; built first when missing (into a temporary folder, then renamed)."""
    root = build_root(cfg)
    if root.is_dir():
        return root
    check_settings(cfg)
    photos = {name: read_photo(name) for name in cfg.photos}
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}")  # not mkdtemp: the tree keeps the umask's permissions
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed build that had this process id
    tmp.mkdir(parents=True)
    try:
        for name, photo in photos.items():
            write_split(photo, name, "train", int(cfg.train_crops), cfg, tmp)
            write_split(photo, name, "test", int(cfg.test_crops), cfg, tmp)
        (tmp / "build.json").write_text(json.dumps(build_settings(cfg), indent=2) + "\n")
        tmp.rename(root)
    except OSError:
        if not root.is_dir():  # a concurrent build that finished first is as good as ours
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
