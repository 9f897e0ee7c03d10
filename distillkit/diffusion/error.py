"""The per-image denoising error of a class-conditional denoiser: how well it predicts the noise that
was added to an image, averaged over a fixed set of timesteps. It measures the diffusion role on held-out
images, and it is D2C's diffusion difficulty (higher = harder)."""

from __future__ import annotations

import torch

from distillkit.diffusion.denoisers import noise_schedule
from distillkit.progress import progress
from distillkit.training import autocast


@torch.no_grad()
def denoising_error(model, pixels: torch.Tensor, labels: torch.Tensor, train_cfg: dict | None, timesteps: int,
                    seed: int, amp: bool, batch_size: int = 256, scheduler=None) -> torch.Tensor:
    """Per image, ``mean_t ‖ε_t − ε_θ(x_t, t, c)‖²`` (per element) over ``timesteps`` evenly spaced t, with one
    noise draw ε_t per t shared by every image, so images are compared under the same noise.

    ``pixels`` in [-1, 1] at the model's size (or a pretrained pipeline's latents). Predicting zero noise
    scores 1. ``scheduler``: the noise schedule the model was trained under, when ``train_cfg`` does not
    describe it (a pretrained pipeline's).
    """
    scheduler = scheduler if scheduler is not None else noise_schedule(train_cfg)
    device = pixels.device
    steps = torch.linspace(0, scheduler.config.num_train_timesteps - 1, timesteps, device=device).round().long()
    noise = torch.randn((timesteps, *pixels.shape[1:]), device=device,
                        generator=torch.Generator(device).manual_seed(seed))
    model.eval()
    errors = torch.zeros(len(pixels), device=device)
    # minutes for a whole training set on a CPU (D2C scores 60 000 images × |T|): a bar, or a log line a minute
    for start in progress(range(0, len(pixels), batch_size), desc="denoising error", leave=False):
        clean, cond = pixels[start:start + batch_size], labels[start:start + batch_size]
        for t, eps in zip(steps, noise):
            t_batch = t.repeat(len(clean))
            noisy = scheduler.add_noise(clean, eps.expand_as(clean), t_batch)
            with autocast(device, amp, on_cpu=True):
                predicted = model(noisy, t_batch, class_labels=cond).sample.float()
            errors[start:start + batch_size] += (predicted - eps).square().flatten(1).mean(1)
    return errors / timesteps
