"""Denoiser networks and the noise schedule they are trained under."""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def noise_schedule(train_cfg: dict):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=int(train_cfg["timesteps"]), beta_schedule=train_cfg["beta_schedule"],
                         clip_sample=True, prediction_type="epsilon")


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
        from types import SimpleNamespace

        out = self.transformer(noisy, timestep=timesteps, class_labels=class_labels).sample
        return SimpleNamespace(sample=out[:, :self.channels])
