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
    """Options mirror ``conf/learner/classifier.yaml``; the per-sample loss is its feedback."""

    roles = ("student",)

    @validated
    def __init__(self, lr: PositiveFloat = 0.01, momentum: NonNegativeFloat = 0.9,
                 weight_decay: NonNegativeFloat = 5e-4, dsa_strategy: str | None = None, amp: bool = True):
        self.lr, self.momentum, self.weight_decay, self.amp = lr, momentum, weight_decay, amp
        self.dsa_strategy = dsa_strategy if dsa_strategy and dsa_strategy != "none" else None
        self.steps = 0

    def start(self, ctx) -> None:
        self.model = ctx.role("student")
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.lr, momentum=self.momentum,
                                         weight_decay=self.weight_decay)

    def step(self, batch, ctx) -> torch.Tensor:
        self.model.train()
        x = batch.images
        if self.dsa_strategy:  # seeded by the step count, so a resumed run draws the same augmentations
            x = DSA(self.dsa_strategy, seed=self.steps)(x)
        with autocast(ctx.device, self.amp):
            logits = self.model(x).float()
        targets = batch.labels if batch.soft_labels is None else batch.soft_labels.float().softmax(1)
        per_sample = F.cross_entropy(logits, targets, reduction="none")
        self.optimizer.zero_grad(set_to_none=True)
        per_sample.mean().backward()
        self.optimizer.step()
        self.steps += 1
        return per_sample.detach()

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.steps = state["steps"]
