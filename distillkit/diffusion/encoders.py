"""Frozen encoders that D2C's Attach reads (:mod:`distillkit.diffusion.attach`): a T5 text encoder for the
class captions, and image encoders whose feature maps a UNet block is aligned with (DINOv2 through timm, or
the ``teacher`` classifier role as an offline stand-in). Each raises :class:`EncoderUnavailable` with one
sentence when it cannot be built (no package, no weights), so a run can stop before it trains anything.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distillkit.diffusion.pixels import to_channels, to_model_space
from distillkit.errors import UserError


class EncoderUnavailable(UserError):
    """An encoder that cannot be built here: a missing package or weights (a hub download without a network)."""


def first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


# ---- text ------------------------------------------------------------------------------------------

@torch.no_grad()
def t5_token_embeddings(model_id: str, captions: list[str], max_tokens: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tokens, mask)``: the T5 encoder's last hidden states of each caption, padded or truncated to
    ``max_tokens`` tokens (K × L × D, zero where padded), and the attention mask (K × L). ``model_id``: a hub id
    or a local folder holding the encoder and its tokenizer."""
    try:
        from transformers import AutoTokenizer, T5EncoderModel
    except ImportError as err:
        raise EncoderUnavailable(f"needs the transformers package ({first_line(err)}; pip install "
                                 "'distillkit[text]')") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
        encoder = T5EncoderModel.from_pretrained(model_id).to(device).eval()
    except Exception as err:  # no weights (offline), not a T5 folder, a broken download
        raise EncoderUnavailable(f"cannot load the T5 encoder '{model_id}' ({first_line(err)})") from None
    batch = tokenizer(captions, padding="max_length", truncation=True, max_length=max_tokens, return_tensors="pt")
    mask = batch["attention_mask"].to(device)
    tokens = torch.cat([encoder(input_ids=ids, attention_mask=m).last_hidden_state.float()
                        for ids, m in zip(batch["input_ids"].to(device).split(64), mask.split(64))])
    return tokens * mask[..., None], mask.float()


# ---- images ----------------------------------------------------------------------------------------

def build_vit(name: str, image_size: int, pretrained: bool = True, weights: str | None = None) -> nn.Module:
    """A timm ViT (e.g. DINOv2-B, ``vit_base_patch14_dinov2.lvd142m``) without its head, for ``image_size``
    inputs; weights from the hub, or from the local file ``weights``."""
    import timm

    from distillkit.roles.classifier import frozen

    overlay = {"file": weights} if weights else None
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=0, img_size=image_size,
                                  pretrained_cfg_overlay=overlay)
    except Exception as err:  # unknown name, no network for the hub weights, a bad file
        raise EncoderUnavailable(f"cannot build timm's '{name}' with its weights ({first_line(err)})") from None
    return frozen(model)


@torch.no_grad()
def vit_feature_maps(vit: nn.Module, images: torch.Tensor, data, batch_size: int) -> torch.Tensor:
    """A ViT's patch tokens of normalised ``images`` as feature maps (N × D × grid): the images as RGB pixels,
    resized to the ViT's input size, normalised with its own mean and std; prefix tokens (class, registers)
    dropped."""
    size = vit.patch_embed.img_size
    config = getattr(vit, "pretrained_cfg", {}) or {}
    mean = torch.tensor(config.get("mean", (0.485, 0.456, 0.406)), device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(config.get("std", (0.229, 0.224, 0.225)), device=images.device).view(1, 3, 1, 1)
    maps = []
    for chunk in images.split(batch_size):
        pixels = to_channels((to_model_space(chunk, data) + 1) / 2, 3)
        pixels = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
        tokens = vit.forward_features((pixels - mean) / std)[:, vit.num_prefix_tokens:].float()
        grid = vit.patch_embed.grid_size
        maps.append(tokens.transpose(1, 2).reshape(len(chunk), -1, *grid))
    return torch.cat(maps)


def teacher_layer(teacher: nn.Module, example: torch.Tensor, height: int) -> int:
    """Which module of the teacher's ``features`` gives the map to align with: the deepest whose output is a
    feature map at least ``height`` high (pooled down to the block's grid, never blown up), else the first map."""
    features = getattr(teacher, "features", None)
    if not isinstance(features, nn.Sequential):
        raise EncoderUnavailable("the teacher has no feature maps to read (its model must be one of distillkit's "
                                 "networks, e.g. model@roles.teacher.model=convnet, not a timm model)")
    chosen, x = None, example[:1]
    with torch.no_grad():
        for i, module in enumerate(features):
            x = module(x)
            if x.ndim == 4 and (chosen is None or x.shape[-2] >= height):
                chosen = i
    if chosen is None:
        raise EncoderUnavailable("the teacher's features give no feature map")
    return chosen


@torch.no_grad()
def teacher_feature_maps(teacher: nn.Module, layer: int, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The teacher's feature map after ``features[layer]`` for normalised ``images`` (N × C × H × W)."""
    head = teacher.features[:layer + 1]
    return torch.cat([head(chunk).float() for chunk in images.split(batch_size)])


def to_grid(maps: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Feature maps resized to a block's ``grid`` (area-weighted when shrinking) as tokens: N × (h·w) × D."""
    if tuple(maps.shape[-2:]) != tuple(grid):
        maps = F.interpolate(maps, size=grid, mode="bilinear", antialias=True, align_corners=False)
    return maps.flatten(2).transpose(1, 2).contiguous()
