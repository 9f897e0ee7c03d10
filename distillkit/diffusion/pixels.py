"""Between the dataset's normalised (possibly ZCA-whitened) space and a diffusion model's pixels.

Diffusion models work on pixels in [-1, 1] (where DDPM/DDIM clip their samples), not on the
normalised data. Images are padded (edge-replicated) to a size the UNet can halve at every level and
cropped after sampling.
"""

from __future__ import annotations

import math

import torch

from distillkit.errors import UserError


def to_model_space(images: torch.Tensor, data) -> torch.Tensor:
    """Normalised (possibly ZCA-whitened) images → pixels in [-1, 1]."""
    zca = data.extra.get("zca")
    if zca is not None:  # the whitening matrices were fitted, and stay, on the CPU
        images = zca.inverse(images.cpu()).to(images.device)
    return (data.denormalise(images) * 2 - 1).clamp(-1, 1)


def from_pixels(pixels: torch.Tensor, data) -> torch.Tensor:
    """Pixels in [0, 1] at the dataset's size and channels → the dataset's normalised space."""
    mean = torch.tensor(data.mean, device=pixels.device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=pixels.device).view(1, -1, 1, 1)
    images = (pixels - mean) / std
    zca = data.extra.get("zca")
    return zca(images.cpu()).to(images.device) if zca is not None else images


def padding_for(size: tuple[int, int], multiple: int, square: bool = False) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding to the next multiple of ``multiple`` (a UNet of L levels halves the
    image L − 1 times: 2^(L−1); a DiT cuts it into patches), to a square of that side when ``square``."""
    (h, w) = size
    if square:
        h = w = max(h, w)
    extra_h, extra_w = (math.ceil(s / multiple) * multiple - s for s in (h, w))
    extra_h, extra_w = extra_h + h - size[0], extra_w + w - size[1]
    return extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2


def crop(images: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
    left, right, top, bottom = padding
    return images[..., top:images.shape[-2] - bottom, left:images.shape[-1] - right]


def to_channels(pixels: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB output for a grey dataset becomes luminance (ITU-R 601); grey for RGB is repeated."""
    if pixels.shape[1] == channels:
        return pixels
    if channels == 1 and pixels.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], device=pixels.device).view(1, 3, 1, 1)
        return (pixels * weights).sum(1, keepdim=True)
    if channels == 3 and pixels.shape[1] == 1:
        return pixels.repeat(1, 3, 1, 1)
    raise UserError(f"cannot turn {pixels.shape[1]}-channel generated images into {channels}-channel ones")
