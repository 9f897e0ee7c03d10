"""Knowledge distillation of the ``student`` role from the ``teacher`` role (SSD-KD's and Fast-DFKD's
student side): on each batch, the student matches the teacher's softened outputs."""

from __future__ import annotations

import torch

from distillkit.learners.classifier import ClassifierLearner
from distillkit.training import kd_per_sample, teacher_logits
from distillkit.validation import NonNegativeFloat, PositiveFloat, validated


class KDStudent(ClassifierLearner):
    """Options mirror ``conf/learner/kd_student.yaml``. The per-sample KD loss is the feedback (a prioritized
    sampler's priorities); the teacher sees the same augmented images as the student; labels are unused."""

    roles = ("student", "teacher")

    @validated
    def __init__(self, temperature: PositiveFloat = 20.0, lr: PositiveFloat = 0.1, momentum: NonNegativeFloat = 0.9,
                 weight_decay: NonNegativeFloat = 1e-4, dsa_strategy: str | None = "crop_flip", amp: bool = True):
        super().__init__(lr=lr, momentum=momentum, weight_decay=weight_decay, dsa_strategy=dsa_strategy, amp=amp)
        self.temperature = temperature

    def begin(self, model: torch.nn.Module, ctx) -> None:
        super().begin(model, ctx)
        self.teacher = ctx.role("teacher")

    def per_sample_loss(self, logits: torch.Tensor, x: torch.Tensor, batch, ctx) -> torch.Tensor:
        return kd_per_sample(logits, teacher_logits(self.teacher, x, self.amp), self.temperature)
