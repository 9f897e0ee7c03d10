"""Images of distilled sets: ``grid.png``, one row per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from distillkit.io import atomic_path


def to_display(images: torch.Tensor, data) -> torch.Tensor:
    """Undo ZCA and normalisation, then stretch each image to [0, 1] if it left that range."""
    images = images.detach().float().cpu()
    zca = data.extra.get("zca")
    if zca is not None:
        images = zca.inverse(images)
    images = data.denormalise(images)
    low = images.amin(dim=(1, 2, 3), keepdim=True).clamp(max=0)
    high = images.amax(dim=(1, 2, 3), keepdim=True).clamp(min=1)
    return (images - low) / (high - low)


def save_grid(distilled, data, path: Path, max_per_class: int = 10, scale: int | None = None) -> Path:
    images = to_display(distilled.images, data)
    c, h, w = images.shape[1:]
    scale = scale or max(1, 64 // max(h, w))
    rows = []
    for k in range(data.num_classes):
        idx = torch.nonzero(distilled.labels.cpu() == k).flatten()[:max_per_class]
        row = torch.ones(max_per_class, c, h, w)
        row[:len(idx)] = images[idx]
        rows.append(torch.cat(list(row), dim=2))
    grid = torch.cat(rows, dim=1)
    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    picture = Image.fromarray(array.squeeze(2) if c == 1 else array)
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path
