"""Real datasets as in-memory tensors, normalised, with their class names and statistics.

Every loader returns a :class:`RealData`. Tensors stay on the CPU here; stages move what they
need to the device once. A dataset that cannot be found raises :class:`UserError` with one line
saying where it looked and how to get it.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import numpy as np
import torch

from pydantic import Field

from distillkit.data.photo_patches import BuildSettings as PhotoPatchesSettings
from distillkit.data.photo_patches import check_settings as check_photo_patches
from distillkit.data.photo_patches import ensure_built
from distillkit.errors import UserError
from distillkit.validation import Float, Int, PositiveFloat, PositiveInt

FASHION_MNIST_SYSTEM_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]


@dataclass
class RealData:
    """A labelled train/test split in the dataset's normalised space (N×C×H×W float32)."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return self.train_images.shape[1]

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.train_images.shape[2:])

    def denormalise(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
        return images * std + mean


def _normalise(x: torch.Tensor, mean, std) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean_t) / std_t


def _limit(images, labels, per_class: int | None):
    """Keep the first ``per_class`` samples of every class (tiny datasets for tests and smoke runs)."""
    if not per_class:
        return images, labels
    keep = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in labels.unique()])
    keep = keep.sort().values
    return images[keep], labels[keep]


def _finish(name, train, test, classes, mean, std, cfg) -> RealData:
    (xtr, ytr), (xte, yte) = train, test
    xtr, ytr = _limit(xtr, ytr, cfg.get("train_per_class"))
    xte, yte = _limit(xte, yte, cfg.get("test_per_class"))
    return RealData(name, _normalise(xtr, mean, std), ytr.long(), _normalise(xte, mean, std),
                    yte.long(), list(classes), tuple(mean), tuple(std))


def load_digits(cfg) -> RealData:
    """scikit-learn's 8×8 digits (shipped inside scikit-learn): a stratified, seeded split."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(bunch.target)
    idx = np.arange(len(labels))
    tr, te = train_test_split(idx, test_size=cfg.get("test_fraction", 0.25),
                              stratify=bunch.target, random_state=cfg.get("split_seed", 0))
    mean, std = (float(images[tr].mean()),), (float(images[tr].std()),)
    return _finish("digits", (images[tr], labels[tr]), (images[te], labels[te]),
                   [str(i) for i in range(10)], mean, std, cfg)


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            magic = f.read(4)
            if len(magic) != 4 or magic[:2] != b"\0\0":
                raise UserError(f"{path} is not an IDX file (bad magic number)")
            ndim = magic[3]
            shape = struct.unpack(">" + "I" * ndim, f.read(4 * ndim))
            data = np.frombuffer(f.read(), dtype=np.uint8)
    except (OSError, EOFError) as err:
        raise UserError(f"cannot read {path}: {err}") from None
    if data.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated: expected {int(np.prod(shape))} values, found {data.size}")
    return data.reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _mnist_like_from_idx(folder: Path):
    files = {s: _find_idx(folder, s) for s in (
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    if any(p is None for p in files.values()):
        return None
    arrays = {k: torch.from_numpy(_read_idx(p).copy()) for k, p in files.items()}
    train = (arrays["train-images-idx3-ubyte"].float().unsqueeze(1) / 255.0,
             arrays["train-labels-idx1-ubyte"].long())
    test = (arrays["t10k-images-idx3-ubyte"].float().unsqueeze(1) / 255.0,
            arrays["t10k-labels-idx1-ubyte"].long())
    return train, test


def _torchvision_class(name: str):
    try:
        import torchvision.datasets as tvd
    except Exception as err:  # a broken torchvision install raises RuntimeError, not ImportError
        raise UserError(f"dataset '{name}' needs a working torchvision ({type(err).__name__}: "
                        f"{str(err).splitlines()[0]})") from None
    return getattr(tvd, {"fashion_mnist": "FashionMNIST", "mnist": "MNIST", "cifar10": "CIFAR10",
                         "cifar100": "CIFAR100", "svhn": "SVHN"}[name])


def _torchvision_split(name: str, root: Path, train: bool, download: bool):
    cls = _torchvision_class(name)
    try:
        if name == "svhn":
            ds = cls(str(root), split="train" if train else "test", download=download)
            x, y = torch.from_numpy(ds.data).float() / 255.0, torch.from_numpy(ds.labels)
            return (x, y), [str(i) for i in range(10)]
        ds = cls(str(root), train=train, download=download)
    except (RuntimeError, OSError) as err:
        hint = "pass dataset.download=true on a machine with a network, or point dataset.root at a copy"
        raise UserError(f"dataset '{name}' not found under {root} ({str(err).splitlines()[0]}); {hint}") from None
    data = ds.data if isinstance(ds.data, torch.Tensor) else torch.from_numpy(np.asarray(ds.data))
    x = data.float() / 255.0
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    y = torch.as_tensor(ds.targets)
    return (x.contiguous(), y), list(ds.classes)


def load_fashion_mnist(cfg) -> RealData:
    """IDX files from ``dataset.root``, then the Debian package's folder, then a torchvision download."""
    tried = []
    for folder in [Path(cfg.root).expanduser()] if cfg.get("root") else []:
        tried.append(str(folder))
        found = _mnist_like_from_idx(folder) or _mnist_like_from_idx(folder / "FashionMNIST" / "raw")
        if found:
            return _finish("fashion_mnist", *found, FASHION_MNIST_CLASSES, cfg.mean, cfg.std, cfg)
    tried.append(str(FASHION_MNIST_SYSTEM_ROOT))
    found = _mnist_like_from_idx(FASHION_MNIST_SYSTEM_ROOT)
    if found:
        return _finish("fashion_mnist", *found, FASHION_MNIST_CLASSES, cfg.mean, cfg.std, cfg)
    if not cfg.get("download", True):
        raise UserError(f"Fashion-MNIST not found (looked in {', '.join(tried)}); install it with "
                        "'apt-get install dataset-fashion-mnist' or set dataset.root to a folder of IDX files")
    return load_torchvision(cfg)


def load_torchvision(cfg) -> RealData:
    """mnist / fashion_mnist / cifar10 / cifar100 / svhn through torchvision (downloads when allowed)."""
    root = Path(cfg.download_root).expanduser()
    train, classes = _torchvision_split(cfg.name, root, True, cfg.get("download", True))
    test, _ = _torchvision_split(cfg.name, root, False, cfg.get("download", True))
    return _finish(cfg.name, train, test, classes, cfg.mean, cfg.std, cfg)


IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG"}


def _read_folder_split(split_dir: Path, classes: list[str], size: int, per_class: int | None):
    from PIL import Image

    images, labels = [], []
    for label, cls in enumerate(classes):
        files = sorted(p for p in (split_dir / cls).rglob("*") if p.suffix in IMAGE_SUFFIXES)
        for path in files[:per_class] if per_class else files:
            with Image.open(path) as img:
                img = img.convert("RGB").resize((size, size), Image.BICUBIC)
                images.append(torch.from_numpy(np.asarray(img).copy()))
            labels.append(label)
    if not images:
        raise UserError(f"no images found under {split_dir}")
    x = torch.stack(images).permute(0, 3, 1, 2).float() / 255.0
    return x, torch.tensor(labels)


def _tinyimagenet_val_to_folders(root: Path) -> Path:
    """TinyImageNet ships val/ as one folder plus an annotation file; read it as class folders."""
    val = root / "val"
    annotations = val / "val_annotations.txt"
    if not annotations.is_file():
        return val
    by_class = root / "val_by_class"
    if not by_class.exists():
        tmp = root / "val_by_class.tmp"
        for line in annotations.read_text().splitlines():
            name, cls = line.split("\t")[:2]
            (tmp / cls).mkdir(parents=True, exist_ok=True)
            target = tmp / cls / name
            if not target.exists():
                target.symlink_to((val / "images" / name).resolve())
        tmp.rename(by_class)
    return by_class


def load_imagefolder(cfg) -> RealData:
    """A class-per-folder tree: ``root/train/<class>/*`` and ``root/<val|test>/<class>/*``."""
    if not cfg.get("root"):
        raise UserError(f"dataset '{cfg.name}' needs dataset.root=<folder with train/ and val/ class folders>")
    root = Path(cfg.root).expanduser()
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise UserError(f"dataset '{cfg.name}' not found: {train_dir} does not exist; "
                        f"download it ({cfg.get('source', 'see docs/datasets.md')}) and set dataset.root")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if cfg.get("classes"):
        classes = [c for c in cfg.classes if c in set(classes)] or classes
    test_dir = next((root / s for s in ("val", "test") if (root / s).is_dir()), None)
    if test_dir is None:
        raise UserError(f"dataset '{cfg.name}': no val/ or test/ folder under {root}")
    if (test_dir / "val_annotations.txt").is_file():
        test_dir = _tinyimagenet_val_to_folders(root)
    size = int(cfg.image_size)
    train = _read_folder_split(train_dir, classes, size, cfg.get("train_per_class"))
    test = _read_folder_split(test_dir, classes, size, cfg.get("test_per_class"))
    names = list(cfg.get("class_names") or classes)
    return RealData(cfg.name, _normalise(train[0], cfg.mean, cfg.std), train[1].long(),
                    _normalise(test[0], cfg.mean, cfg.std), test[1].long(), names,
                    tuple(cfg.mean), tuple(cfg.std), extra={"folder_classes": classes})


def load_photo_patches(cfg) -> RealData:
    """Crops of packaged photographs (``photo_patches.py``), built once, then read as an image folder."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    folder = {"root": str(ensure_built(cfg)), "classes": plain["photos"]}  # classes numbered in dataset.photos order
    return load_imagefolder(OmegaConf.create({**plain, **folder}))


@dataclass
class DatasetSettings:
    """The types and ranges of the keys dataset configs share (``conf/dataset``); a loader's own extra
    keys pass through unchecked here and are checked by the loader."""

    name: str
    loader: str
    train_per_class: PositiveInt | None = None
    test_per_class: PositiveInt | None = None
    zca: bool = False
    zca_eps: PositiveFloat = 0.1
    mean: list[Float] | None = None
    std: list[PositiveFloat] | None = None
    image_size: PositiveInt | None = None
    test_fraction: Annotated[Float, Field(gt=0, lt=1)] = 0.25
    split_seed: Int = 0
    download: bool = True
    imagenet_labels: dict[str, Int] | None = None  # class folder → ImageNet-1k label (pretrained ImageNet models)


def check_dataset(cfg) -> None:
    """Check the dataset config's shared keys, and a loader's own (``LOADER_SETTINGS``); one ConfigError
    naming the key."""
    from distillkit.validation import check_settings, plain

    values = plain(cfg)
    for schema in (DatasetSettings, *LOADER_SETTINGS.get(cfg.get("loader"), ())[:1]):
        check_settings(schema, {k: v for k, v in values.items() if k in schema.__dataclass_fields__}, "dataset")
    for check in LOADER_SETTINGS.get(cfg.get("loader"), ())[1:]:
        check(cfg)


# Keys that say where a dataset is read from, or how others name its classes, not what it contains.
LOCATION_KEYS = ("root", "download_root", "download", "source", "imagenet_labels")


def dataset_identity(cfg) -> dict:
    """Every dataset setting that changes which images it holds (for cache keys and set metadata)."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True) if not isinstance(cfg, dict) else cfg
    return {k: v for k, v in plain.items() if k not in LOCATION_KEYS}


LOADERS = {
    "digits": load_digits,
    "fashion_mnist": load_fashion_mnist,
    "torchvision": load_torchvision,
    "imagefolder": load_imagefolder,
    "photo_patches": load_photo_patches,
}


# a loader's own keys: their schema, and a check of what types cannot say (run when the run is planned)
LOADER_SETTINGS = {"photo_patches": (PhotoPatchesSettings, check_photo_patches)}


def load_dataset(cfg) -> RealData:
    """Build the dataset named by ``cfg.loader`` (see ``conf/dataset/``)."""
    if cfg.loader not in LOADERS:
        raise UserError(f"unknown dataset loader '{cfg.loader}' (choose from: {', '.join(LOADERS)})")
    return LOADERS[cfg.loader](cfg)
