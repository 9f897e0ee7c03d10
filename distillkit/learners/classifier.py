"""A classifier learner: the ``student`` role's fresh network, trained by SGD on each batch the
``rounds`` schedule hands it (hard labels, or soft targets when the batch carries them)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from distillkit.data.augment import DSA
from distillkit.stages import Learner
from distillkit.training import autocast
from distillkit.validation import NonNegativeFloat, PositiveFloat, validated


class ClassifierLearner(Learner):
    """Options mirror ``conf/learner/classifier.yaml``; the per-sample loss is its feedback. A batch's
    ``weights`` (a prioritized sampler's importance weights) weigh the per-sample losses in the step."""

    roles = ("student",)

    @validated
    def __init__(self, lr: PositiveFloat = 0.01, momentum: NonNegativeFloat = 0.9,
                 weight_decay: NonNegativeFloat = 5e-4, dsa_strategy: str | None = None, amp: bool = True):
        self.lr, self.momentum, self.weight_decay, self.amp = lr, momentum, weight_decay, amp
        self.dsa_strategy = dsa_strategy if dsa_strategy and dsa_strategy != "none" else None
        self.steps = 0

    def start(self, ctx) -> None:
        self.begin(ctx.role("student"), ctx)

    def begin(self, model: torch.nn.Module, ctx) -> None:
        """Train ``model`` from now on (the student role's, or a network an evaluator trains)."""
        self.model = model
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=self.momentum,
                                         weight_decay=self.weight_decay)

    def per_sample_loss(self, logits: torch.Tensor, x: torch.Tensor, batch, ctx) -> torch.Tensor:
        """The loss of each sample of the (augmented) batch ``x``: cross-entropy to its (soft) label."""
        targets = batch.labels if batch.soft_labels is None else batch.soft_labels.float().softmax(1)
        return F.cross_entropy(logits, targets, reduction="none")

    def step(self, batch, ctx) -> torch.Tensor:
        self.model.train()
        x = batch.images
        if self.dsa_strategy:  # seeded by the step count, so a resumed (or restored) learner draws the same ones
            with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
                torch.manual_seed(self.steps)
                x = DSA(self.dsa_strategy, seed=self.steps)(x)
        with autocast(ctx.device, self.amp):
            logits = self.model(x).float()
        per_sample = self.per_sample_loss(logits, x, batch, ctx)
        weighted = per_sample if batch.weights is None else per_sample * batch.weights.to(per_sample)
        self.optimizer.zero_grad(set_to_none=True)
        weighted.mean().backward()
        self.optimizer.step()
        self.steps += 1
        return per_sample.detach()

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = state["steps"]
