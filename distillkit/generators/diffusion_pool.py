"""A pool of generated images for samplers to choose from (DGS): ``pool_factor × ipc`` per class,
sampled from the ``diffusion`` role (a UNet trained on the real data, or a pretrained pipeline;
:mod:`distillkit.roles.diffusion`), in the dataset's normalised space.

Cached by the diffusion model's spec, the sampling settings, the pool size and the run seed, so a
sweep over samplers generates once. Written to the run folder: ``pool.safetensors`` and
``pool_grid.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from distillkit.cache import cache_spec
from distillkit.data.synthetic import SyntheticSet
from distillkit.errors import DivergedError
from distillkit.plots import save_grid
from distillkit.progress import progress
from distillkit.stages import Generator
from distillkit.validation import Int, PositiveFloat, PositiveInt, validated

log = logging.getLogger("distillkit")


class DiffusionPool(Generator):
    """``pool_factor × ipc`` images per class from the diffusion role (``conf/generator/diffusion_pool.yaml``)."""

    roles = ("diffusion",)

    @validated
    def __init__(self, pool_factor: PositiveInt = 5, seed: Int = 0, guidance_scale: PositiveFloat = 2.0,
                 sampling_steps: PositiveInt = 50, batch_size: PositiveInt = 256):
        self.pool_factor, self.seed = pool_factor, seed
        self.guidance_scale, self.sampling_steps, self.batch_size = guidance_scale, sampling_steps, batch_size

    def __call__(self, ctx) -> SyntheticSet:
        per_class = self.pool_factor * ctx.ipc
        role = ctx.roles.role("diffusion")
        if not role.cacheable:  # a caller's own pipeline object: nothing to key a cache on
            pool = self.generate(ctx, per_class)
        else:
            spec = cache_spec(ctx.dataset_identity, role.precision(ctx), model=role.settings(ctx),
                              sampling={"guidance_scale": self.guidance_scale, "steps": self.sampling_steps,
                                        "batch_size": self.batch_size}, per_class=per_class, seed=ctx.seed + self.seed)
            folder = ctx.cache.get_or_create("diffusion_pool", spec,
                                             lambda f: self.generate(ctx, per_class).save(f / "pool.safetensors"))
            pool = SyntheticSet.load(folder / "pool.safetensors").to(ctx.device)
        if ctx.run_dir is not None:
            pool.save(Path(ctx.run_dir) / "pool.safetensors")
            ctx.tracker.log_image("pool/grid", save_grid(pool, ctx.data, Path(ctx.run_dir) / "pool_grid.png"))
        return pool

    def generate(self, ctx, per_class: int) -> SyntheticSet:
        model = ctx.role("diffusion")
        labels = torch.arange(ctx.data.num_classes, device=ctx.device).repeat_interleave(per_class)
        generator = torch.Generator(ctx.device).manual_seed(ctx.seed + self.seed)
        log.info("generating %d images per class (%d steps, guidance %.1f)", per_class, self.sampling_steps,
                 self.guidance_scale)
        images = torch.cat([model.generate(chunk, self.guidance_scale, self.sampling_steps, generator)
                            for chunk in progress(labels.split(self.batch_size), desc="pool")])
        if not torch.isfinite(images).all():
            raise DivergedError("the diffusion model generated NaN or infinite pixels; retrain it with a lower "
                                "roles.diffusion.train.lr (delete its cache entry) or lower generator.guidance_scale")
        meta = {"source": "diffusion_pool", "dataset": ctx.dataset_identity, "mean": list(ctx.data.mean),
                "std": list(ctx.data.std), "classes": ctx.data.classes, "zca": bool(ctx.cfg.dataset.get("zca", False))}
        return SyntheticSet(images, labels, meta=meta)
