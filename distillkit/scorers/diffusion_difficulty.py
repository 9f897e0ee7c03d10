"""D2C's diffusion difficulty (Select, Huang, Shao et al. 2025): how badly the frozen ``diffusion`` role
predicts the noise added to each pool image,

    d(x, c) = mean_{t ∈ T} ‖ε_t − ε_θ(x_t, t, c)‖²,   x_t = α_t x + σ_t ε_t,

over ``timesteps`` evenly spaced t with one noise draw ε_t per t shared by every image (seeded), so images
are ranked under the same noise (:func:`distillkit.diffusion.error.denoising_error`). Higher = harder.
The local UNet scores pixels; a pretrained pipeline (DiT) scores its VAE latents, as the paper does.

Scores are cached by the diffusion role's spec, the pool's content (dataset identity and a digest of its
images and labels), the timesteps and the seed: a sweep over samplers, ipc or run seeds scores once. The
batch size is not in the key (the model is frozen, in eval mode: it changes speed only). What the scoring
cost when it ran is kept with the scores and written to the run folder (``diffusion_difficulty.json``),
so a run that read the scores from the cache still reports the method's cost.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from distillkit.cache import cache_spec, content_digest
from distillkit.io import write_json
from distillkit.stages import Scorer, Scores
from distillkit.validation import Int, PositiveInt, validated

log = logging.getLogger("distillkit")

SCORES_FILE = "difficulty.safetensors"
COST_FILE = "scoring.json"
REPORT_FILE = "diffusion_difficulty.json"


class DiffusionDifficulty(Scorer):
    """Per pool image, the diffusion role's mean denoising error (``conf/scorer/diffusion_difficulty.yaml``).

    ``timesteps``: |T|, evenly spaced over the model's training steps; ``seed``: the shared noise draws
    (not offset by the run seed: every run seed ranks the pool alike); ``batch_size``: images per forward.
    """

    roles = ("diffusion",)

    @validated
    def __init__(self, timesteps: PositiveInt = 10, seed: Int = 0, batch_size: PositiveInt = 256):
        self.timesteps, self.seed, self.batch_size = timesteps, seed, batch_size

    def __call__(self, pool, ctx) -> Scores:
        role = ctx.roles.role("diffusion")
        if not role.cacheable:  # a caller's own pipeline object: nothing to key a cache on
            start = time.perf_counter()
            scores = self.score(pool, ctx)
            cost, cached = {"seconds": round(time.perf_counter() - start, 3)}, False
        else:
            spec = cache_spec(ctx.dataset_identity, role.precision(ctx), diffusion=role.spec(ctx),
                              pool=content_digest(pool.images, pool.labels), timesteps=self.timesteps, seed=self.seed)
            cached = ctx.cache.find("diffusion_difficulty", spec) is not None
            folder = ctx.cache.get_or_create("diffusion_difficulty", spec, lambda f: self.build(pool, ctx, f))
            scores = load_file(str(folder / SCORES_FILE), device=str(ctx.device))["difficulty"]
            cost = json.loads((folder / COST_FILE).read_text())
        log.info("diffusion difficulty of %d images at %d timesteps: %s", len(pool), self.timesteps,
                 f"read from the cache (scoring took {cost['seconds']:.1f} s)" if cached
                 else f"{cost['seconds']:.1f} s")
        if ctx.run_dir is not None:
            write_json(Path(ctx.run_dir) / REPORT_FILE, {
                "timesteps": self.timesteps, "seed": self.seed, "images": len(pool),
                "scoring_seconds": cost["seconds"], "from_cache": cached,
                "mean": round(scores.mean().item(), 6), "min": round(scores.min().item(), 6),
                "max": round(scores.max().item(), 6)})
        return Scores(scores)

    def build(self, pool, ctx, folder: Path) -> None:
        """Score the pool into a cache entry, with what it cost."""
        start = time.perf_counter()
        scores = self.score(pool, ctx).cpu().contiguous()  # .cpu() waits for the device: the time is the work's
        seconds = round(time.perf_counter() - start, 3)
        save_file({"difficulty": scores}, str(folder / SCORES_FILE))
        (folder / COST_FILE).write_text(json.dumps({"seconds": seconds, "images": len(pool), "device": str(ctx.device)}))

    def score(self, pool, ctx) -> torch.Tensor:
        """The pool's scores on the device: one batched pass per ``batch_size`` images and timestep, no host
        sync until the caller reads them."""
        model = ctx.role("diffusion")
        return model.denoising_error(pool.images.to(ctx.device), pool.labels.to(ctx.device), self.timesteps,
                                     self.seed, self.batch_size).float()
