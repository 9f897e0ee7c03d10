"""The ``diffusion`` role: a class-conditional diffusion model of the real data (``conf/role/diffusion.yaml``).

``source: local`` trains a diffusers ``UNet2DModel`` on the real training images (DDPM noise prediction,
a null class for classifier-free guidance; :mod:`distillkit.diffusion`) and caches it by dataset, UNet
and training settings, seed and precision. ``source: pretrained`` loads a class-conditional diffusers
pipeline (DiT) with a map from the dataset's classes to the pipeline's labels. Either way the role is a
:class:`DiffusionModel`: ``generate(labels, …)`` gives images in the dataset's normalised space.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from distillkit.diffusion.denoisers import (NoisePrediction, UNetSettings, build_dit, build_unet,
                                            pipeline_noise_schedule)
from distillkit.diffusion.error import denoising_error
from distillkit.diffusion.pixels import from_pixels, padding_for, to_channels
from distillkit.diffusion.sampling import sample_ddim
from distillkit.diffusion.spaces import LatentSpace, PixelSpace
from distillkit.diffusion.training import DenoiserTraining, train_denoiser
from distillkit.errors import UserError
from distillkit.roles import Role
from distillkit.training import autocast, precision
from distillkit.validation import ConfigError, Int, PositiveFloat, PositiveInt, validated

log = logging.getLogger("distillkit")


@dataclass
class DiffusionTraining(DenoiserTraining):
    """The role's ``train:``: how the one training loop trains, and for how long."""

    steps: PositiveInt = 2800


@dataclass
class PretrainedPipeline:
    model_id: str | None = "facebook/DiT-XL-2-256"
    class_map: dict[str, Int] | None = None


class DiffusionModel:
    """A diffusion model of the dataset: ``generate(labels, guidance_scale, steps, generator)`` → images
    in the dataset's normalised space, one per label; ``denoising_error(images, labels, timesteps, seed)`` →
    how well it predicts the noise added to each image (D2C's difficulty, the local model's quality)."""

    def generate(self, labels: torch.Tensor, guidance_scale: float, steps: int,
                 generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def denoising_error(self, images: torch.Tensor, labels: torch.Tensor, timesteps: int, seed: int,
                        batch_size: int = 256) -> torch.Tensor:
        raise NotImplementedError


class LocalDiffusion(DiffusionModel):
    """A denoiser trained here (a UNet, or a DiT) in its ``space``: the padded pixels, or a VAE's latents
    (:mod:`distillkit.diffusion.spaces`)."""

    def __init__(self, denoiser, space, num_classes: int, train_cfg: dict, amp: bool):
        self.denoiser, self.space, self.num_classes, self.train_cfg, self.amp = (denoiser, space, num_classes,
                                                                                 train_cfg, amp)

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        """Normalised images as the denoiser sees them (pixels in [-1, 1], padded; or latents)."""
        return self.space.encode(images)

    def fit(self, images: torch.Tensor, labels: torch.Tensor, folder: Path, seed: int, **hooks) -> None:
        """Train the denoiser on normalised ``images`` (distillkit.diffusion.training; ``hooks``: its extra losses
        and milestones), resumable from ``folder``."""
        train_denoiser(self.denoiser, self.inputs(images), labels, self.num_classes, self.train_cfg, folder, seed,
                       self.amp, **hooks)

    def denoising_error(self, images: torch.Tensor, labels: torch.Tensor, timesteps: int, seed: int,
                        batch_size: int = 256) -> torch.Tensor:
        """Per image, the mean noise-prediction error over ``timesteps`` fixed timesteps (distillkit.diffusion.error)."""
        return denoising_error(self.denoiser, self.inputs(images), labels, self.train_cfg, timesteps, seed, self.amp,
                               batch_size)

    def generate(self, labels, guidance_scale, steps, generator):
        samples = sample_ddim(self.denoiser, labels, self.num_classes, self.train_cfg, steps, guidance_scale,
                              generator, self.amp, self.space.shape, clip=self.space.clip)
        return self.space.decode(samples)


def untrained_local_diffusion(unet_cfg: dict, train_cfg: dict, data, amp: bool, device, dit_cfg: dict | None = None,
                              vae=None) -> LocalDiffusion:
    """A fresh denoiser for ``data``'s images (draws its initial weights from the global RNG: seed it first): the
    UNet of ``unet_cfg`` on pixels padded so every level halves them, or, given ``dit_cfg``, a DiT on pixels
    padded to a square of whole patches, or on ``vae``'s latents (``dit_cfg["latents"] == "vae"``)."""
    if dit_cfg is None:
        space = unet_space(data, unet_cfg)
        denoiser = build_unet(unet_cfg, data.channels, data.num_classes, space.shape[1:])
    else:
        if dit_cfg["latents"] == "vae":
            space = LatentSpace(vae, data, int(dit_cfg["vae_image_size"]), amp)
        else:
            space = PixelSpace(data, padding_for(data.image_size, int(dit_cfg["patch_size"]), square=True))
        channels, side, _ = space.shape
        if side % int(dit_cfg["patch_size"]):
            raise UserError(f"the DiT's {side}×{side} inputs are not whole {dit_cfg['patch_size']}-pixel patches: "
                            "change evaluator.dit.patch_size or evaluator.dit.vae_image_size")
        denoiser = build_dit(dit_cfg, channels, data.num_classes, side)
    return LocalDiffusion(denoiser.to(device), space, data.num_classes, train_cfg, amp)


def unet_space(data, unet_cfg: dict) -> PixelSpace:
    """A UNet's pixels: padded so each of its levels but the last can halve the image."""
    return PixelSpace(data, padding_for(data.image_size, 2 ** (len(unet_cfg["channel_mult"]) - 1)))


class PipelineDiffusion(DiffusionModel):
    """A diffusers pipeline; its outputs are resized to the dataset's size and channels."""

    def __init__(self, pipeline, pipeline_labels: torch.Tensor, data, amp: bool, device):
        self.pipeline, self.pipeline_labels, self.data, self.amp = pipeline.to(device), pipeline_labels, data, amp
        self.pipeline.set_progress_bar_config(disable=True)

    def generate(self, labels, guidance_scale, steps, generator):
        with autocast(labels.device, self.amp):
            pixels = self.pipeline(class_labels=self.pipeline_labels[labels.cpu()].tolist(),
                                   guidance_scale=guidance_scale, num_inference_steps=steps, generator=generator,
                                   output_type="pt").images.float()
        pixels = F.interpolate(pixels, size=self.data.image_size, mode="bilinear", antialias=True,
                               align_corners=False).clamp(0, 1)
        return from_pixels(to_channels(pixels, self.data.channels), self.data)

    def denoising_error(self, images, labels, timesteps, seed, batch_size=256):
        """Per image, the transformer's mean noise-prediction error on the VAE latents of the image (as D2C scores
        with a pretrained DiT), under the noise schedule it was trained with; pipeline labels for the classes.
        Like generation, bf16 on CUDA only (the role's precision)."""
        amp = self.amp and labels.device.type == "cuda"
        latents = self.latents(images, amp, batch_size)
        transformer = self.pipeline.transformer
        return denoising_error(NoisePrediction(transformer, transformer.config.in_channels), latents,
                               self.pipeline_labels.to(labels.device)[labels], None, timesteps, seed, amp, batch_size,
                               scheduler=pipeline_noise_schedule(self.pipeline.scheduler.config))

    def latents(self, images: torch.Tensor, amp: bool, batch_size: int = 256) -> torch.Tensor:
        """Normalised images → the VAE's scaled latents at the transformer's size (the posterior mean)."""
        vae = self.pipeline.vae
        size = self.pipeline.transformer.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1)
        return LatentSpace(vae, self.data, size, amp, batch_size).encode(images)


class DiffusionRole(Role):
    """The class-conditional diffusion model a method asks for as ``ctx.role("diffusion")``.

    ``pipeline``: a ready diffusers pipeline for ``source: pretrained``, used instead of loading
    ``pretrained.model_id`` (for callers that built or loaded one themselves; never cached).
    """

    kind = "diffusion_unet"

    @validated
    def __init__(self, source: Literal["local", "pretrained"] = "local", seed: Int = 0, amp: bool = True,
                 unet: UNetSettings = UNetSettings(), train: DiffusionTraining = DiffusionTraining(),
                 pretrained: PretrainedPipeline = PretrainedPipeline(), quality_timesteps: PositiveInt = 10,
                 max_held_out_loss: PositiveFloat | None = 1.0, accept_below_floor: bool = False, pipeline=None):
        self.source, self.seed, self.amp = source, seed, amp
        self.quality_timesteps, self.max_held_out_loss = quality_timesteps, max_held_out_loss
        self.accept_below_floor = accept_below_floor
        self.unet_cfg, self.train_cfg = dict(vars(unet)), dict(vars(train))
        self.unet_cfg["channel_mult"] = list(self.unet_cfg["channel_mult"])
        self.pretrained, self.pipeline, self.cacheable = pretrained, pipeline, pipeline is None
        if source == "pretrained" and pipeline is None and not pretrained.model_id:
            raise ConfigError("pretrained.model_id", "is needed for source=pretrained (e.g. facebook/DiT-XL-2-256)")

    # ---- identity ------------------------------------------------------------------------------
    def precision(self, ctx) -> str:
        return precision(ctx.device, self.amp, on_cpu=self.source == "local")

    def settings(self, ctx) -> dict:
        if self.source == "pretrained":
            return {"pretrained": {"model_id": self.pretrained.model_id, "class_map": self.pretrained.class_map}}
        # how often to checkpoint does not change the model
        train = {k: v for k, v in self.train_cfg.items() if k != "checkpoint_every"}
        return {"unet": self.unet_cfg, "train": train, "seed": self.seed}

    # ---- the local UNet --------------------------------------------------------------------------
    def train(self, ctx, folder: Path) -> dict:
        log.info("training a class-conditional diffusion UNet on %s (%d steps); cached for later runs",
                 ctx.data.name, self.train_cfg["steps"])
        torch.manual_seed(self.seed)
        model = untrained_local_diffusion(self.unet_cfg, self.train_cfg, ctx.data, self.amp, ctx.device)
        model.fit(ctx.split.train_images, ctx.split.train_labels, folder, self.seed)
        return self.measure(ctx, model)

    def measure(self, ctx, model: LocalDiffusion) -> dict:
        """The mean denoising loss on the held-out images and on as many training images (predicting
        zero noise scores 1.0): how well the model learnt, and how much it memorised."""
        split = ctx.split
        n = len(split.held_out_labels)
        sample = torch.randperm(len(split.train_labels), generator=torch.Generator().manual_seed(self.seed))[:n]
        sample = sample.to(ctx.device)

        def loss(images, labels) -> float:
            return round(model.denoising_error(images, labels, self.quality_timesteps, self.seed).mean().item(), 4)

        return {"held_out_loss": loss(split.held_out_images, split.held_out_labels),
                "train_loss": loss(split.train_images[sample], split.train_labels[sample]), "held_out_images": n,
                "timesteps": self.quality_timesteps, "steps": self.train_cfg["steps"],
                "trained_on": len(split.train_labels)}

    def shortfall(self, quality: dict) -> str | None:
        if self.max_held_out_loss is not None and quality.get("held_out_loss", 0.0) >= self.max_held_out_loss:
            return (f"held-out denoising loss {quality['held_out_loss']:.3f} is not below its ceiling "
                    f"{self.max_held_out_loss:g} (1.0: no better than predicting no noise)")
        return None

    def remedy(self, quality: dict) -> str:
        return f"train it longer ({self.key}.train.steps, now {self.train_cfg['steps']})"

    def describe(self, quality: dict) -> str:
        if "held_out_loss" not in quality:
            return f"pretrained pipeline {quality.get('weights')} (quality not measured)"
        ceiling = "no ceiling" if self.max_held_out_loss is None else f"ceiling {self.max_held_out_loss}"
        return (f"held-out denoising loss {quality['held_out_loss']:.3f} (training images {quality['train_loss']:.3f}) "
                f"on {quality['held_out_images']} images at {quality['timesteps']} timesteps; {quality['steps']} steps "
                f"on {quality['trained_on']} images; {ceiling}")

    def load(self, ctx, folder: Path) -> LocalDiffusion:
        from diffusers import UNet2DModel

        # low_cpu_mem_usage would need accelerate, which distillkit does not depend on
        unet = UNet2DModel.from_pretrained(folder / "unet", low_cpu_mem_usage=False).to(ctx.device).eval()
        return LocalDiffusion(unet, unet_space(ctx.data, self.unet_cfg), ctx.data.num_classes, self.train_cfg,
                              self.amp)

    # ---- a pretrained pipeline ---------------------------------------------------------------------
    def materialise(self, ctx):
        if self.source == "local":
            return super().materialise(ctx)
        labels = self.class_map(ctx)  # before the (slow) load: a bad map fails at once
        pipeline = self.pipeline if self.pipeline is not None else self.load_pipeline()
        return PipelineDiffusion(pipeline, labels, ctx.data, self.amp, ctx.device), {"weights": self.pretrained.model_id}

    def load_pipeline(self):
        from diffusers import DiTPipeline

        model_id = self.pretrained.model_id
        try:
            return DiTPipeline.from_pretrained(model_id)
        except (OSError, ValueError) as err:
            raise UserError(f"cannot load the diffusers pipeline '{model_id}' ({str(err).splitlines()[0]}); it needs "
                            "the hub weights (a network, or a local folder as roles.diffusion.pretrained.model_id), "
                            "or use roles.diffusion.source=local") from None

    def class_map(self, ctx) -> torch.Tensor:
        """The pipeline label of each dataset class, looked up by class folder name, then class name."""
        mapping = {str(k): v for k, v in (self.pretrained.class_map or {}).items()}
        keys = ctx.data.extra.get("folder_classes") or ctx.data.classes
        missing = [k for k, name in zip(keys, ctx.data.classes) if k not in mapping and name not in mapping]
        if missing:
            raise UserError(f"roles.diffusion.pretrained.class_map has no label for class(es) "
                            f"{', '.join(map(str, missing))}")
        return torch.tensor([int(mapping[k] if k in mapping else mapping[name])
                             for k, name in zip(keys, ctx.data.classes)])
