"""Where a local diffusion model works: the dataset's pixels (padded so the denoiser can divide them), or a
VAE's latents (DiT on SD-VAE latents, as D2C trains it). A space turns the dataset's normalised images into the
denoiser's inputs (:meth:`encode`) and its samples back (:meth:`decode`); ``shape`` is one input's shape and
``clip`` says whether DDIM may clip its estimate of x_0 to [-1, 1] (pixels only)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distillkit.diffusion.encoders import first_line
from distillkit.diffusion.pixels import crop, from_pixels, to_channels, to_model_space
from distillkit.errors import UserError
from distillkit.training import autocast


class PixelSpace:
    """Pixels in [-1, 1], edge-padded by ``padding`` (left, right, top, bottom)."""

    clip = True

    def __init__(self, data, padding: tuple[int, int, int, int]):
        self.data, self.padding = data, padding
        left, right, top, bottom = padding
        self.shape = (data.channels, data.image_size[0] + top + bottom, data.image_size[1] + left + right)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return F.pad(to_model_space(images, self.data), self.padding, mode="replicate")

    def decode(self, pixels: torch.Tensor) -> torch.Tensor:
        return from_pixels((crop(pixels, self.padding) + 1) / 2, self.data)


class LatentSpace:
    """A VAE's scaled latents of the images resized to ``image_size`` (a square) with the VAE's channels: the
    posterior mean (no draw, so an image always encodes the same). Decoded samples are resized back to the
    dataset's size and channels. bf16 only where ``amp`` and on CUDA (a VAE's decoder is sensitive to it)."""

    clip = False

    def __init__(self, vae, data, image_size: int, amp: bool = False, batch_size: int = 64):
        self.vae, self.data, self.image_size, self.amp, self.batch_size = vae, data, image_size, amp, batch_size
        side = image_size // 2 ** (len(vae.config.block_out_channels) - 1)
        self.shape = (vae.config.latent_channels, side, side)
        self.scale = vae.config.scaling_factor

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.encode_chunk(chunk) for chunk in images.split(self.batch_size)])

    def encode_chunk(self, images: torch.Tensor) -> torch.Tensor:
        pixels = to_channels((to_model_space(images, self.data) + 1) / 2, self.vae.config.in_channels)
        pixels = F.interpolate(pixels, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                               align_corners=False)
        with autocast(images.device, self.amp and images.device.type == "cuda"):
            mean = self.vae.encode(pixels.clamp(0, 1) * 2 - 1).latent_dist.mean
        return mean.float() * self.scale

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.decode_chunk(chunk) for chunk in latents.split(self.batch_size)])

    def decode_chunk(self, latents: torch.Tensor) -> torch.Tensor:
        with autocast(latents.device, self.amp and latents.device.type == "cuda"):
            pixels = self.vae.decode(latents / self.scale).sample.float()
        pixels = F.interpolate((pixels.clamp(-1, 1) + 1) / 2, size=self.data.image_size, mode="bilinear",
                               antialias=True, align_corners=False).clamp(0, 1)
        return from_pixels(to_channels(pixels, self.data.channels), self.data)


def load_vae(model_id: str, device):
    """A diffusers ``AutoencoderKL`` (frozen, eval) from a hub id or a local folder; one line when it cannot load."""
    from diffusers import AutoencoderKL

    try:
        vae = AutoencoderKL.from_pretrained(model_id, low_cpu_mem_usage=False)
    except (OSError, ValueError) as err:  # no network for the hub, not a VAE folder
        raise UserError(f"cannot load the VAE '{model_id}' ({first_line(err)}); it needs the hub weights (a network) "
                        "or a local folder with a diffusers AutoencoderKL") from None
    return vae.to(device).eval().requires_grad_(False)
