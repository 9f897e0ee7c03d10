"""DDIM sampling (eta 0) with classifier-free guidance."""

from __future__ import annotations

import torch

from distillkit.diffusion.denoisers import noise_schedule
from distillkit.training import autocast


@torch.no_grad()
def sample_ddim(model, labels: torch.Tensor, null_class: int, train_cfg: dict, steps: int, guidance_scale: float,
                generator: torch.Generator, amp: bool, shape: tuple[int, ...], clip: bool = True) -> torch.Tensor:
    """Samples of ``shape`` for ``labels`` with guidance ``ε_u + w (ε_c − ε_u)``: pixels in [-1, 1] (``clip``:
    x_0's estimate clipped to them at every step) or latents (no clipping)."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(noise_schedule(train_cfg, clip_sample=clip).config)
    scheduler.set_timesteps(steps)
    device = labels.device
    x = torch.randn((len(labels), *shape), device=device, generator=generator)
    guided = guidance_scale != 1.0  # w = 1 is plain conditional sampling: half the work
    cond = torch.cat([labels, torch.full_like(labels, null_class)]) if guided else labels
    for t in scheduler.timesteps:
        with autocast(device, amp, on_cpu=True):
            eps = model(torch.cat([x, x]) if guided else x, t, class_labels=cond).sample.float()
        if guided:
            conditional, unconditional = eps.chunk(2)
            eps = unconditional + guidance_scale * (conditional - unconditional)
        x = scheduler.step(eps, t, x).prev_sample
    return x
