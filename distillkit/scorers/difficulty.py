"""Classifier difficulty (DGS): ``d(x) = 1 − softmax(f(x))[y]`` with the trained teacher f.

The difficulty-guided sampler compares the pool's difficulty with the real data's, so the
scorer returns both: :class:`DifficultyScores` holds the pool's scores and, optionally, the real
training images' scores with their labels. Samplers that only need per-sample scores read
``scores.pool``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from distillkit.training import predict


@dataclass
class DifficultyScores:
    pool: torch.Tensor                      # one difficulty in [0, 1] per pool sample
    real: torch.Tensor | None = None        # one per real training image (None when not scored)
    real_labels: torch.Tensor | None = None


@torch.no_grad()
def classifier_difficulty(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                          batch_size: int) -> torch.Tensor:
    """``1 − p(y | x)`` per sample, batched on the images' device."""
    probabilities = predict(model, images, batch_size=batch_size).softmax(dim=1)
    true_class = probabilities.gather(1, labels.to(probabilities.device).long().view(-1, 1)).flatten()
    # 1 − p can come out a hair below 0 in float arithmetic; difficulty lives in [0, 1]
    return (1.0 - true_class).clamp(0.0, 1.0)


class ClassifierDifficulty:
    """Difficulty of every pool sample (and of every real training image) under ``ctx.teacher``."""

    def __init__(self, score_real: bool = True, batch_size: int = 1024):
        self.score_real = score_real
        self.batch_size = batch_size

    def __call__(self, pool, ctx) -> DifficultyScores:
        teacher = ctx.teacher
        pool_scores = classifier_difficulty(teacher, pool.images.to(ctx.device), pool.labels, self.batch_size)
        if not self.score_real:
            return DifficultyScores(pool_scores)
        real_scores = classifier_difficulty(teacher, ctx.train_images, ctx.train_labels, self.batch_size)
        return DifficultyScores(pool_scores, real_scores, ctx.train_labels)
