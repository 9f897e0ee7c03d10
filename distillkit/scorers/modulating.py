"""SSD-KD's modulating function φ (a reconstruction: docs/methods/ssdkd.md), under the teacher role:

    φ_i = (1 − n_ŷᵢ / B) · (1 − p_t(ŷᵢ | xᵢ))^γ

with ŷᵢ the teacher's predicted class of sample i, n_c how many of the B samples scored together the
teacher puts in class c. The first factor is *diversity-aware* (samples of classes the batch already
over-represents score low), the second *difficulty-aware* (a focal term: samples the teacher is sure
of score low). Each factor can be switched off (then it is 1). The scores order what enters a
balanced replay buffer (:mod:`distillkit.schedules.buffer`), and weigh the per-sample terms of the
inversion loss when a generator is given this scorer as its ``weighting``.
"""

from __future__ import annotations

import torch

from distillkit.scorers.difficulty import difficulty_from_logits
from distillkit.stages import Scorer, Scores
from distillkit.training import predict
from distillkit.validation import NonNegativeFloat, validated


def modulating(logits: torch.Tensor, gamma: float = 2.0, diversity: bool = True,
               difficulty: bool = True) -> torch.Tensor:
    """φ of each sample from the teacher's ``logits`` of the B samples scored together."""
    predicted = logits.argmax(1)
    phi = torch.ones(len(logits), device=logits.device)
    if diversity:
        counts = torch.bincount(predicted, minlength=logits.shape[1]).float()
        phi = phi * (1.0 - counts[predicted] / len(logits))
    if difficulty:
        phi = phi * difficulty_from_logits(logits, predicted).pow(gamma)
    return phi


class Modulating(Scorer):
    """Options mirror ``conf/scorer/modulating.yaml``."""

    roles = ("teacher",)

    @validated
    def __init__(self, diversity: bool = True, difficulty: bool = True, gamma: NonNegativeFloat = 2.0):
        self.diversity, self.difficulty, self.gamma = diversity, difficulty, gamma

    def phi(self, logits: torch.Tensor) -> torch.Tensor:
        return modulating(logits, self.gamma, self.diversity, self.difficulty)

    def __call__(self, pool, ctx) -> Scores:
        return Scores(self.phi(predict(ctx.role("teacher"), pool.images)))
