"""Denoiser networks and the noise schedule they are trained under."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Literal

import torch
from torch import nn

from distillkit.validation import PositiveInt


@dataclass
class UNetSettings:
    """What :func:`build_unet` builds (``unet:`` of the diffusion role and of the generative evaluator)."""

    width: PositiveInt = 32                  # channels of the first level
    channel_mult: list[PositiveInt] = (1, 2, 2)  # per-level width multipliers; one level per entry
    layers_per_block: PositiveInt = 1
    attention: bool = False                  # self-attention at the deepest level


def build_unet(unet_cfg: dict, channels: int, num_classes: int, sample_size: tuple[int, int]):
    """A class-conditional ``UNet2DModel``; class index ``num_classes`` is the null class (CFG)."""
    from diffusers import UNet2DModel

    widths = [int(unet_cfg["width"]) * int(m) for m in unet_cfg["channel_mult"]]
    attend = [bool(unet_cfg["attention"]) and i == len(widths) - 1 for i in range(len(widths))]  # deepest only
    down = ["AttnDownBlock2D" if a else "DownBlock2D" for a in attend]
    up = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attend)]  # up blocks run deepest first
    return UNet2DModel(
        sample_size=sample_size, in_channels=channels, out_channels=channels,
        layers_per_block=int(unet_cfg["layers_per_block"]), block_out_channels=widths,
        down_block_types=down, up_block_types=up,
        # 32 groups as in DDPM, fewer when the width is not a multiple of 32
        norm_num_groups=math.gcd(32, *widths), num_class_embeds=num_classes + 1,
    )


@dataclass
class DiTSettings:
    """What :func:`build_dit` builds (``dit:`` of the generative evaluator); DiT-L/2 is depth 24, 16 heads of 64,
    patch 2, on an SD-VAE's latents."""

    depth: PositiveInt = 6                   # transformer blocks
    heads: PositiveInt = 4                   # attention heads per block
    head_dim: PositiveInt = 32               # channels per head (the width is heads × head_dim)
    patch_size: PositiveInt = 2              # side of the square patch that becomes one token
    latents: Literal["pixels", "vae"] = "pixels"  # what it denoises: the padded pixels, or a VAE's latents
    vae: str = "stabilityai/sd-vae-ft-ema"   # latents=vae: a diffusers AutoencoderKL, hub id or local folder
    vae_image_size: PositiveInt = 256        # latents=vae: images are resized to this side before encoding


def build_dit(dit_cfg: dict, channels: int, num_classes: int, side: int):
    """A class-conditional DiT on ``channels`` × ``side`` × ``side`` inputs; class index ``num_classes`` is the null
    class (CFG)."""
    dit = class_conditional_dit()(
        num_attention_heads=int(dit_cfg["heads"]), attention_head_dim=int(dit_cfg["head_dim"]), in_channels=channels,
        out_channels=channels, num_layers=int(dit_cfg["depth"]), sample_size=side,
        patch_size=int(dit_cfg["patch_size"]), num_embeds_ada_norm=num_classes)
    for block in dit.transformer_blocks:
        block.norm1.emb.class_embedder.dropout_prob = 0.0  # the table keeps its null row; only diffusers' draw goes
    return dit


@functools.cache
def class_conditional_dit():
    """The DiT class (built on first use: diffusers is imported lazily)."""
    from diffusers import DiTTransformer2DModel

    class ClassConditionalDiT(DiTTransformer2DModel):
        """diffusers' DiT called as a UNet is, ``(x_t, t, class_labels=c)`` → ``.sample`` the predicted noise (no
        learned variance: the training loss is the noise's alone). diffusers' own label dropout is off, so the
        training loop's ``label_dropout`` is the only one."""

        def forward(self, noisy, timesteps, class_labels, **kwargs):
            timesteps = timesteps.expand(len(noisy)) if timesteps.dim() == 0 else timesteps  # DDIM gives one t
            return super().forward(noisy, timestep=timesteps, class_labels=class_labels, **kwargs)

    return ClassConditionalDiT


def is_dit(denoiser: nn.Module) -> bool:
    return hasattr(denoiser, "transformer_blocks")


class SharedEmbedding(nn.Module):
    """Calls a module that another one owns (held outside the module tree, so its weights are counted once)."""

    def __init__(self, embedding: nn.Module):
        super().__init__()
        self.shared = (embedding,)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.shared[0](labels)


def unet_blocks(levels: int) -> list[str]:
    """The blocks of a UNet of ``levels`` levels whose output REPA may align."""
    return [*(f"down_blocks.{i}" for i in range(levels)), "mid_block", *(f"up_blocks.{i}" for i in range(levels))]


def dit_blocks(depth: int) -> list[str]:
    """The blocks of a DiT of ``depth`` blocks whose output (tokens) REPA may align."""
    return [f"transformer_blocks.{i}" for i in range(depth)]


def set_class_embedding(denoiser: nn.Module, make) -> None:
    """Replace ``denoiser``'s class embedding with ``make(width)`` (an ``nn.Module`` from class index to a vector of
    the width the denoiser adds to its timestep embedding)."""
    if is_dit(denoiser):  # diffusers' DiT embeds the class in every block: one module serves them all
        denoiser.class_embedding = make(denoiser.inner_dim)  # its weights are the DiT's, once
        for block in denoiser.transformer_blocks:
            block.norm1.emb.class_embedder = SharedEmbedding(denoiser.class_embedding)
    else:
        denoiser.class_embedding = make(denoiser.time_embedding.linear_2.out_features)


def noise_schedule(train_cfg: dict, clip_sample: bool = True):
    """DDPM's schedule; ``clip_sample``: DDIM clips its estimate of x_0 to [-1, 1] (pixels, not latents)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=int(train_cfg["timesteps"]), beta_schedule=train_cfg["beta_schedule"],
                         clip_sample=clip_sample, prediction_type="epsilon")


def pipeline_noise_schedule(scheduler_config):
    """The DDPM noise schedule a pretrained pipeline's model was trained under, from its (sampling) scheduler's
    config: the same betas, so ``add_noise`` makes the x_t the model learnt from."""
    from diffusers import DDPMScheduler

    from distillkit.errors import UserError

    prediction = scheduler_config.get("prediction_type", "epsilon")
    if prediction != "epsilon":
        raise UserError(f"the pipeline's model predicts '{prediction}', not the noise: its denoising error is not "
                        "defined here")
    return DDPMScheduler.from_config(scheduler_config)


class NoisePrediction:
    """A pipeline's class-conditional transformer (DiT) called the way a UNet is: ``(x_t, t, class_labels=c)``
    → ``.sample``, the predicted noise. DiT also predicts the variance in its last channels; only the noise is
    kept."""

    def __init__(self, transformer, channels: int):
        self.transformer, self.channels = transformer, channels

    def eval(self) -> "NoisePrediction":
        self.transformer.eval()
        return self

    def __call__(self, noisy, timesteps, class_labels):
        out = self.transformer(noisy, timestep=timesteps, class_labels=class_labels).sample
        return SimpleNamespace(sample=out[:, :self.channels])
