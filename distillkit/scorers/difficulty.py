"""Classifier difficulty (DGS): ``d(x) = 1 − softmax(f(x))[y]`` with the trained teacher f.

The difficulty-guided sampler compares the pool's difficulty with the real data's, so the scorer
returns both (:class:`~distillkit.stages.Scores`): the pool's scores and, optionally, the real
training images' scores with their labels. It also writes what the teacher makes of the pool,
``pool_quality.json`` (its accuracy per class), since it has just computed it.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from distillkit.cache import cache_spec
from distillkit.io import write_json
from distillkit.stages import Scorer, Scores
from distillkit.training import predict
from distillkit.validation import PositiveInt, validated

REAL_SCORES_FILE = "difficulty.safetensors"


def difficulty_from_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``1 − p(y | x)`` per sample from a classifier's logits."""
    probabilities = logits.float().softmax(dim=1)
    true_class = probabilities.gather(1, labels.to(probabilities.device).long().view(-1, 1)).flatten()
    # 1 − p can come out a hair below 0 in float arithmetic; difficulty lives in [0, 1]
    return (1.0 - true_class).clamp(0.0, 1.0)


class ClassifierDifficulty(Scorer):
    """Difficulty of every pool sample (and of every real training image) under the teacher role."""

    roles = ("teacher",)

    @validated
    def __init__(self, score_real: bool = True, batch_size: PositiveInt = 1024):
        self.score_real = score_real
        self.batch_size = batch_size

    def __call__(self, pool, ctx) -> Scores:
        logits = predict(ctx.role("teacher"), pool.images.to(ctx.device), batch_size=self.batch_size)
        if ctx.run_dir is not None:
            self.save_pool_quality(logits, pool.labels.to(ctx.device), ctx)
        pool_scores = difficulty_from_logits(logits, pool.labels)
        if not self.score_real:
            return Scores(pool_scores)
        return Scores(pool_scores, self.real_scores(ctx), ctx.train_labels)

    def real_scores(self, ctx) -> torch.Tensor:
        """The real training images' difficulty, computed once per teacher and then read from the
        cache (scoring 60 000 images costs minutes on a CPU; the pool's few hundred cost seconds).
        The batch size is not in the key: the teacher is in eval mode, so it changes speed only."""
        def build(folder: Path) -> None:
            logits = predict(ctx.role("teacher"), ctx.train_images, batch_size=self.batch_size)
            save_file({"difficulty": difficulty_from_logits(logits, ctx.train_labels).cpu().contiguous()},
                      str(folder / REAL_SCORES_FILE))

        teacher = ctx.roles.role("teacher")
        spec = cache_spec(ctx.dataset_identity, teacher.precision(ctx), teacher=teacher.spec(ctx))
        folder = ctx.cache.get_or_create("real_difficulty", spec, build)
        return load_file(str(folder / REAL_SCORES_FILE), device=str(ctx.device))["difficulty"]

    @staticmethod
    def save_pool_quality(logits: torch.Tensor, labels: torch.Tensor, ctx) -> None:
        """``pool_quality.json``: the teacher's accuracy on the pool, per class."""
        correct = logits.argmax(1) == labels
        per_class = {name: round(100.0 * correct[labels == c].float().mean().item(), 2)
                     for c, name in enumerate(ctx.data.classes)}
        mean = round(100.0 * correct.float().mean().item(), 2)
        write_json(Path(ctx.run_dir) / "pool_quality.json", {"teacher_accuracy": {"mean": mean, "per_class": per_class},
                                                             "images_per_class": len(labels) // ctx.data.num_classes})
        ctx.tracker.log_metrics({"pool/teacher_accuracy": mean,
                                 **{f"pool/teacher_accuracy/{name}": v for name, v in per_class.items()}})
