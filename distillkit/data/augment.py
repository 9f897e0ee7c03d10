"""Differentiable siamese augmentation (DSA) and ZCA whitening, shared by every stage.

DSA follows Zhao & Bilen (ICML 2021): a strategy such as ``color_crop_cutout_flip_scale_rotate``
names the ops; each call applies *one* op drawn at random (the reference's ``aug_mode='S'``),
with per-sample random parameters. In siamese mode one parameter set is drawn and applied to
every sample of both batches, which is what distribution matching needs (same transform for the
real and the synthetic batch, whatever their sizes).

The ops are written here rather than taken from kornia because kornia cannot share one draw
between two batches of different sizes, and DSA's one-op-per-call semantics with these exact
ranges is what the published numbers were measured with. ZCA uses kornia.
"""

from __future__ import annotations

import math
import random

import torch
import torch.nn.functional as F

OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


class DSA:
    """``DSA(strategy)(x)`` augments a batch; ``DSA(...).siamese(a, b)`` augments two batches alike."""

    def __init__(self, strategy: str = "color_crop_cutout_flip_scale_rotate", scale: float = 1.2,
                 rotate_degrees: float = 15.0, crop_pad: float = 0.125, cutout: float = 0.5,
                 brightness: float = 1.0, saturation: float = 2.0, contrast: float = 0.5,
                 flip_prob: float = 0.5, seed: int | None = None):
        self.ops = [op for op in strategy.split("_") if op] if strategy and strategy != "none" else []
        unknown = set(self.ops) - set(OPS)
        if unknown:
            from distillkit.errors import UserError
            raise UserError(f"unknown DSA op(s) {sorted(unknown)}; choose from {', '.join(OPS)}")
        self.scale, self.rotate_degrees, self.crop_pad = scale, rotate_degrees, crop_pad
        self.cutout, self.flip_prob = cutout, flip_prob
        self.brightness, self.saturation, self.contrast = brightness, saturation, contrast
        # The op choice is a host-side draw, so augmenting never waits on the device.
        self._choice = random.Random(seed)

    @property
    def enabled(self) -> bool:
        return bool(self.ops)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.ops:
            return x
        op = self._choice.choice(self.ops)
        return self._apply(op, x, self._draw(op, x.shape[0], x))

    def siamese(self, *batches: torch.Tensor) -> list[torch.Tensor]:
        """The same op and the same random parameters for every sample of every batch."""
        if not self.ops:
            return list(batches)
        op = self._choice.choice(self.ops)
        params = self._draw(op, 1, batches[0])
        return [self._apply(op, x, params) for x in batches]

    # parameters: tensors with a leading dim of n (1 in siamese mode, broadcast over the batch)
    def _draw(self, op: str, n: int, like: torch.Tensor) -> dict:
        def u(*shape):
            return torch.rand(n, *shape, device=like.device, dtype=like.dtype)

        if op == "color":
            return {"brightness": u(1, 1, 1), "saturation": u(1, 1, 1), "contrast": u(1, 1, 1)}
        if op == "crop":
            h, w = like.shape[-2:]
            pad_h, pad_w = int(h * self.crop_pad + 0.5), int(w * self.crop_pad + 0.5)
            shift = torch.stack([torch.randint(-pad_w, pad_w + 1, (n,), device=like.device),
                                 torch.randint(-pad_h, pad_h + 1, (n,), device=like.device)], 1)
            return {"shift": shift}
        if op == "cutout":
            return {"centre": u(2)}
        if op == "flip":
            return {"flip": u(1, 1, 1) < self.flip_prob}
        if op == "scale":
            return {"scale": u(2) * (self.scale - 1.0 / self.scale) + 1.0 / self.scale}
        if op == "rotate":
            return {"angle": (u(1) - 0.5) * 2 * self.rotate_degrees / 180 * math.pi}
        raise AssertionError(op)

    def _apply(self, op: str, x: torch.Tensor, p: dict) -> torch.Tensor:
        if op == "color":
            x = x + (p["brightness"] - 0.5) * self.brightness
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (p["saturation"] * self.saturation) + mean
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            return (x - mean) * (p["contrast"] + self.contrast) + mean
        if op == "flip":
            return torch.where(p["flip"], x.flip(3), x)
        if op == "cutout":
            return x * self._cutout_mask(x, p["centre"])
        n = x.shape[0]
        theta = torch.zeros(p[next(iter(p))].shape[0], 2, 3, device=x.device, dtype=x.dtype)
        if op == "scale":
            theta[:, 0, 0], theta[:, 1, 1] = p["scale"][:, 0], p["scale"][:, 1]
        elif op == "rotate":
            a = p["angle"][:, 0]
            theta[:, 0, 0], theta[:, 0, 1] = torch.cos(a), torch.sin(-a)
            theta[:, 1, 0], theta[:, 1, 1] = torch.sin(a), torch.cos(a)
        elif op == "crop":
            h, w = x.shape[-2:]
            theta[:, 0, 0] = theta[:, 1, 1] = 1.0
            theta[:, 0, 2] = p["shift"][:, 0].to(x.dtype) * 2.0 / w
            theta[:, 1, 2] = p["shift"][:, 1].to(x.dtype) * 2.0 / h
        theta = theta.expand(n, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        mode = "nearest" if op == "crop" else "bilinear"
        return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=True)

    def _cutout_mask(self, x: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        half_h, half_w = int(h * self.cutout + 0.5) / 2, int(w * self.cutout + 0.5) / 2
        cy, cx = centre[:, 0:1] * h, centre[:, 1:2] * w
        ys = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h) + 0.5
        xs = torch.arange(w, device=x.device, dtype=x.dtype).view(1, w) + 0.5
        inside_y = ((ys - cy).abs() < half_h).unsqueeze(2)
        inside_x = ((xs - cx).abs() < half_w).unsqueeze(1)
        return (~(inside_y & inside_x)).unsqueeze(1).to(x.dtype)


class ZCA:
    """ZCA whitening fitted on the training images (kornia), as MTT/DATM/PAD use for CIFAR."""

    def __init__(self, train_images: torch.Tensor, eps: float = 0.1):
        from kornia.enhance import ZCAWhitening

        self.eps = eps
        self._zca = ZCAWhitening(eps=eps, compute_inv=True).fit(train_images.reshape(len(train_images), -1))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._zca(x.reshape(len(x), -1)).reshape(x.shape)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return self._zca.inverse_transform(x.reshape(len(x), -1)).reshape(x.shape)
