"""Classifier difficulty (DGS): ``d(x) = 1 − softmax(f(x))[y]`` with the trained teacher f.

The difficulty-guided sampler compares the pool's difficulty with the real data's, so the
scorer returns both: :class:`DifficultyScores` holds the pool's scores and, optionally, the real
training images' scores with their labels. Samplers that only need per-sample scores read
``scores.pool``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from distillkit.training import predict

REAL_SCORES_FILE = "difficulty.safetensors"


@dataclass
class DifficultyScores:
    pool: torch.Tensor                      # one difficulty in [0, 1] per pool sample
    real: torch.Tensor | None = None        # one per real training image (None when not scored)
    real_labels: torch.Tensor | None = None


def difficulty_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``1 − p(y | x)`` per sample from a classifier's logits."""
    probabilities = logits.float().softmax(dim=1)
    true_class = probabilities.gather(1, labels.to(probabilities.device).long().view(-1, 1)).flatten()
    # 1 − p can come out a hair below 0 in float arithmetic; difficulty lives in [0, 1]
    return (1.0 - true_class).clamp(0.0, 1.0)


@torch.no_grad()
def classifier_difficulty(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                          batch_size: int) -> torch.Tensor:
    """``1 − p(y | x)`` per sample, batched on the images' device."""
    return difficulty_from_logits(predict(model, images, batch_size=batch_size), labels)


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
        return DifficultyScores(pool_scores, self.real_scores(ctx), ctx.train_labels)

    def real_scores(self, ctx) -> torch.Tensor:
        """The real training images' difficulty, computed once per teacher and then read from the
        cache (scoring 60 000 images costs minutes on a CPU; the pool's few hundred cost seconds).
        The batch size is not in the key: the teacher is in eval mode, so it changes speed only."""
        def build(folder: Path) -> None:
            scores = classifier_difficulty(ctx.teacher, ctx.train_images, ctx.train_labels, self.batch_size)
            save_file({"difficulty": scores.cpu().contiguous()}, str(folder / REAL_SCORES_FILE))

        folder = ctx.cache.get_or_create("real_difficulty", {"teacher": ctx.teacher_spec}, build)
        return load_file(str(folder / REAL_SCORES_FILE), device=str(ctx.device))["difficulty"]
