"""Coreset samplers over a pool: all, random, herding and k-center (the classic baselines).

Herding and k-center work on the embeddings of the teacher role (trained on the real data and
cached). Every sampler returns indices into the pool, ``ipc`` per class, seeded.
"""

from __future__ import annotations

import torch

from distillkit.selection import SeededDraws, per_class, random_per_class
from distillkit.stages import Sampler
from distillkit.training import predict
from distillkit.validation import Int, validated


class AllSampler(Sampler):
    """The whole pool (the ``full`` upper-bound row, or a pool that is already the final set)."""

    keeps_ipc_per_class = False

    def __call__(self, pool, scores, ctx) -> torch.Tensor:
        return torch.arange(len(pool), device=pool.labels.device)


class RandomSampler(SeededDraws, Sampler):
    """``ipc`` samples per class uniformly without replacement; ``seed`` offsets the run seed.

    Draws continue one RNG across calls, seeded with the run seed + ``seed`` at the first: a one-shot
    run calls it once; the ``rounds`` schedule calls it at every learner step, each a fresh batch, and
    checkpoints the RNG with the other stages' state."""

    @validated
    def __init__(self, seed: Int = 0):
        self.seed = seed

    def __call__(self, pool, scores, ctx) -> torch.Tensor:
        return random_per_class(pool, ctx.ipc, ctx.data.num_classes, self.draws(ctx.seed + self.seed))


class _EmbeddingSampler(Sampler):
    """Select per class on teacher embeddings; subclasses implement ``select(features, k)``."""

    roles = ("teacher",)

    def __call__(self, pool, scores, ctx) -> torch.Tensor:
        features = predict(ctx.role("teacher"), pool.images, embed=True)
        chosen = [idx[self.select(features[idx], ctx.ipc)]
                  for _, idx in per_class(pool, ctx.ipc, ctx.data.num_classes)]
        return torch.cat(chosen)


class HerdingSampler(_EmbeddingSampler):
    """Welling's herding: greedily keep the running mean of the chosen embeddings near the class mean."""

    def select(self, features: torch.Tensor, k: int) -> torch.Tensor:
        target = features.mean(0)
        chosen: list[int] = []
        total = torch.zeros_like(target)
        available = torch.ones(len(features), dtype=torch.bool, device=features.device)
        for step in range(k):
            gap = ((target * (step + 1) - total).unsqueeze(0) - features).norm(dim=1)
            gap = gap.masked_fill(~available, float("inf"))
            i = int(gap.argmin())
            chosen.append(i)
            available[i] = False
            total += features[i]
        return torch.tensor(chosen, device=features.device)


class KCenterSampler(_EmbeddingSampler):
    """Greedy k-center: start at the sample nearest the class mean, then add the farthest point."""

    def select(self, features: torch.Tensor, k: int) -> torch.Tensor:
        first = int((features - features.mean(0)).norm(dim=1).argmin())
        chosen = [first]
        nearest = (features - features[first]).norm(dim=1)
        for _ in range(k - 1):
            i = int(nearest.argmax())
            chosen.append(i)
            nearest = torch.minimum(nearest, (features - features[i]).norm(dim=1))
        return torch.tensor(chosen, device=features.device)
