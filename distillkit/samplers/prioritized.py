"""Proportional prioritized replay (Schaul et al., 2016) over a replay buffer — SSD-KD's priority sampling
function δ as reconstructed in docs/methods/ssdkd.md.

A sample's priority is its score plus ε: in the ``rounds`` schedule, the learner's last per-sample loss
on it (the KD loss playing the TD error's part), or what it entered the buffer with (the buffer's
``new_score: max`` gives new entries the highest priority). A draw picks sample i with probability
``P(i) = p_i^α / Σ_j p_j^α`` (α = 0: uniform), and its importance weight is ``(N · P(i))^−β``, divided by
the largest weight of the batch; β grows linearly from ``beta_start`` to ``beta_end`` over ``beta_steps``
draws. Without scores (no scorer, a plain pool) every priority is equal.
"""

from __future__ import annotations

import torch

from distillkit.selection import SeededDraws, per_class
from distillkit.stages import Sampler, Scores
from distillkit.validation import Int, NonNegativeFloat, PositiveFloat, PositiveInt, UnitInterval, validated


class PrioritizedReplay(SeededDraws, Sampler):
    """Options mirror ``conf/sampler/prioritized_replay.yaml``.

    ``batch_size``: draws over the whole buffer; ``null``: ``ipc`` per class, each class drawn in proportion
    to its own priorities (then ``P(i)`` is the chance of i in one class-balanced draw,
    ``p_i^α / Σ_{j in its class} p_j^α / classes``). Draws within one batch are without replacement.
    """

    @validated
    def __init__(self, alpha: NonNegativeFloat = 0.6, beta_start: UnitInterval = 0.4, beta_end: UnitInterval = 1.0,
                 beta_steps: PositiveInt = 1000, epsilon: PositiveFloat = 1e-3, batch_size: PositiveInt | None = None,
                 seed: Int = 0):
        self.alpha, self.beta_start, self.beta_end, self.beta_steps = alpha, beta_start, beta_end, beta_steps
        self.epsilon, self.batch_size, self.seed = epsilon, batch_size, seed
        self.drawn = 0  # batches drawn so far (β's clock)

    def beta(self, draw: int) -> float:
        """β at the ``draw``-th batch (0-based): linear from beta_start to beta_end, then constant."""
        return self.beta_start + (self.beta_end - self.beta_start) * min(1.0, draw / self.beta_steps)

    def probabilities(self, pool, scores: Scores | None, ctx) -> torch.Tensor:
        """``P(i)`` for every pool sample (on the CPU)."""
        n = len(pool)
        if scores is None:
            priority = torch.ones(n)
        else:
            priority = scores.pool.detach().float().cpu().clamp_min(0) + self.epsilon
        q = priority.pow(self.alpha)
        if self.batch_size is not None:
            return q / q.sum()
        labels = pool.labels.cpu()
        class_sums = torch.zeros(ctx.data.num_classes).index_add_(0, labels, q)
        present = int((torch.bincount(labels, minlength=ctx.data.num_classes) > 0).sum())
        return q / class_sums[labels] / present

    def __call__(self, pool, scores: Scores | None, ctx) -> torch.Tensor:
        generator = self.draws(ctx.seed + self.seed)
        p = self.probabilities(pool, scores, ctx)
        self.drawn += 1
        if self.batch_size is not None:
            chosen = torch.multinomial(p, min(self.batch_size, len(pool)), replacement=False, generator=generator)
        else:
            chosen = torch.cat([idx.cpu()[torch.multinomial(p[idx.cpu()], ctx.ipc, replacement=False,
                                                            generator=generator)]
                                for _, idx in per_class(pool, ctx.ipc, ctx.data.num_classes)])
        return chosen.to(pool.labels.device)

    def weights(self, pool, scores: Scores | None, indices: torch.Tensor, ctx) -> torch.Tensor:
        """``(N · P(i))^−β / max`` over the batch, β of the draw just made."""
        p = self.probabilities(pool, scores, ctx)[indices.cpu()]
        w = (len(pool) * p).pow(-self.beta(self.drawn - 1))
        return (w / w.max()).to(pool.images.device)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "drawn": self.drawn}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.drawn = state.get("drawn", 0)
