"""The distilled set: tensors plus the metadata that says how to read them, and its file format.

``distilled.safetensors`` holds ``images`` (float32 N×C×H×W in the dataset's normalised space,
ZCA-whitened when ``zca`` is set), ``labels`` (int64 N), and optionally ``soft_labels`` (N×K)
and ``lr`` (a scalar). The header metadata names the dataset, mean/std, ZCA, IPC and method.
Safetensors, not pickle: loading a shared set cannot run code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from distillkit.errors import UserError
from distillkit.io import atomic_path

FORMAT = "distillkit.synthetic/1"


@dataclass
class SyntheticSet:
    """A labelled image set in the dataset's normalised space: a generator's pool, a sampler's choice, the
    distilled set a run saves (``save`` / ``load``), or a replay buffer's contents.

    ``soft_labels`` (N×K logits), when present, are what an evaluator with ``labels: auto`` trains on;
    ``lr`` is a learned evaluation lr (trajectory matching); ``meta`` is what the file's header records.
    ``weights`` (N), when present, weigh each sample's loss in a learner step (a prioritized sampler's
    importance-sampling corrections); they belong to one drawn batch and are never saved.
    """

    images: torch.Tensor
    labels: torch.Tensor
    soft_labels: torch.Tensor | None = None
    lr: torch.Tensor | None = None
    meta: dict = field(default_factory=dict)
    weights: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> "SyntheticSet":
        indices = indices.to(self.labels.device)
        soft = self.soft_labels[indices] if self.soft_labels is not None else None
        weights = self.weights[indices.to(self.weights.device)] if self.weights is not None else None
        return replace(self, images=self.images[indices], labels=self.labels[indices], soft_labels=soft, weights=weights)

    def concat(self, other: "SyntheticSet") -> "SyntheticSet":
        """This set followed by ``other`` (both with soft labels or neither); this set's lr and metadata."""
        if (self.soft_labels is None) != (other.soft_labels is None):
            raise UserError("cannot join a set with soft labels to one without")
        soft = None if self.soft_labels is None else torch.cat([self.soft_labels, other.soft_labels])
        return replace(self, images=torch.cat([self.images, other.images]), labels=torch.cat([self.labels, other.labels]),
                       soft_labels=soft, weights=None)

    def to(self, device) -> "SyntheticSet":
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return replace(self, images=move(self.images), labels=move(self.labels),
                       soft_labels=move(self.soft_labels), lr=move(self.lr), weights=move(self.weights))

    def per_class_counts(self, num_classes: int) -> list[int]:
        return torch.bincount(self.labels.cpu(), minlength=num_classes).tolist()

    def save(self, path: Path) -> None:
        from safetensors.torch import save_file

        tensors = {"images": self.images.detach().float().cpu().contiguous(),
                   "labels": self.labels.detach().long().cpu().contiguous()}
        if self.soft_labels is not None:
            tensors["soft_labels"] = self.soft_labels.detach().float().cpu().contiguous()
        if self.lr is not None:
            tensors["lr"] = self.lr.detach().float().cpu().reshape(())
        header = {"format": FORMAT, **{k: json.dumps(v) for k, v in self.meta.items()}}
        with atomic_path(Path(path)) as tmp:
            save_file(tensors, str(tmp), metadata=header)

    @classmethod
    def load(cls, path: Path) -> "SyntheticSet":
        """Read a distillkit ``.safetensors`` set, or a ``.pt`` with ``images``/``labels`` from another codebase."""
        path = Path(path)
        if not path.is_file():
            raise UserError(f"no such file: {path}")
        if path.suffix in (".pt", ".pth"):
            return cls._load_torch(path)
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise UserError(f"{path} is not a readable safetensors file ({err})") from None
        if header.get("format") != FORMAT:
            raise UserError(f"{path} is not a distillkit distilled set (no '{FORMAT}' header)")
        cls._check(path, tensors)
        meta = {k: json.loads(v) for k, v in header.items() if k != "format"}
        return cls(tensors["images"], tensors["labels"], tensors.get("soft_labels"), tensors.get("lr"), meta)

    @classmethod
    def _load_torch(cls, path: Path) -> "SyntheticSet":
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several unrelated types for corrupt or unsafe files
            raise UserError(f"{path} cannot be loaded safely ({type(err).__name__}: {str(err).splitlines()[0]})") from None
        if not isinstance(blob, dict):
            raise UserError(f"{path} must hold a dict with 'images' and 'labels' tensors")
        cls._check(path, blob)
        lr = blob.get("lr", blob.get("syn_lr"))
        lr = torch.as_tensor(lr, dtype=torch.float32) if lr is not None else None
        return cls(blob["images"].float(), blob["labels"].long(), blob.get("soft_labels"), lr, {})

    @staticmethod
    def _check(path, tensors) -> None:
        for key in ("images", "labels"):
            if key not in tensors:
                raise UserError(f"{path} has no '{key}' tensor")
        images, labels = tensors["images"], tensors["labels"]
        if images.ndim != 4 or labels.ndim != 1 or len(images) != len(labels):
            raise UserError(f"{path}: images must be N×C×H×W and labels N (got {tuple(images.shape)}, "
                            f"{tuple(labels.shape)})")
        if not torch.isfinite(images).all():
            raise UserError(f"{path}: images contain NaN or infinite values")
