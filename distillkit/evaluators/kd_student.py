"""Knowledge-distillation evaluation: how good a student the teacher makes through a set.

``assess(models, ctx)`` (the ``rounds`` schedule: SSD-KD, Fast-DFKD, DeepInversion) tests the learner's
students on the real test set. Called on a distilled set (``distillkit eval <run_dir> evaluator=kd_student``,
``method=dm evaluator=kd_student``) it uses the set as a *transfer set*: for each seed a fresh ``model`` is
distilled from the teacher role on the set's images (labels unused) with the ``kd_student`` learner's loss
for ``epochs`` passes — or ``min_steps`` steps when that is more, so a small set can get the optimiser steps a
data-free student had — then tested. Metrics: ``student_accuracy`` (primary, %) and ``teacher_accuracy``
(the teacher on the same test set, the ceiling the student is measured against).
"""

from __future__ import annotations

import math

import torch

from distillkit.learners.kd import KDStudent
from distillkit.models import ModelSpec
from distillkit.progress import progress
from distillkit.selection import seeded
from distillkit.stages import EvalReport, Evaluator, Metric
from distillkit.training import TrainSpec, accuracy
from distillkit.validation import (Int, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, plain,
                                  validated)


class KDStudentEvaluator(Evaluator):
    """Options mirror ``conf/evaluator/kd_student.yaml``."""

    primary_metric = "student_accuracy"
    higher_is_better = True
    roles = ("teacher",)

    @validated
    def __init__(self, model: ModelSpec = "convnet", epochs: PositiveInt = 100, batch_size: PositiveInt = 256,
                 temperature: PositiveFloat = 20.0, lr: PositiveFloat = 0.05, momentum: NonNegativeFloat = 0.9,
                 weight_decay: NonNegativeFloat = 1e-4, dsa_strategy: str | None = "crop_flip",
                 num_seeds: PositiveInt = 1, seed: Int = 0, amp: bool = True, test_batch_size: PositiveInt = 2048,
                 min_steps: NonNegativeInt = 0):
        self.model, self.epochs, self.batch_size, self.min_steps = plain(model), epochs, batch_size, min_steps
        self.learner_settings = dict(temperature=temperature, lr=lr, momentum=momentum, weight_decay=weight_decay,
                                     dsa_strategy=dsa_strategy, amp=amp)
        self.num_seeds, self.seed, self.amp, self.test_batch_size = num_seeds, seed, amp, test_batch_size

    def check(self, ctx) -> None:
        ctx.build_model(self.model)  # buildable for the dataset's images: found now, not after distillation

    def __call__(self, distilled, ctx) -> EvalReport:
        distilled = distilled.to(ctx.device)
        n = len(distilled)
        batch = min(self.batch_size, n)
        per_pass = math.ceil(n / batch)
        steps = TrainSpec(epochs=self.epochs, min_steps=self.min_steps).total_steps(per_pass)
        runs = []
        for s in range(self.seed, self.seed + self.num_seeds):
            torch.manual_seed(s)
            learner = KDStudent(**self.learner_settings)
            learner.begin(ctx.build_model(self.model), ctx)
            order_rng = seeded(s)
            epochs = range(math.ceil(steps / per_pass))
            for epoch in progress(epochs, desc=f"kd student {s - self.seed + 1}/{self.num_seeds} (epochs)"):
                order = torch.randperm(n, generator=order_rng).to(ctx.device)
                # with min_steps the last pass stops part-way
                for start in range(0, min(per_pass, steps - epoch * per_pass) * batch, batch):
                    learner.step(distilled.subset(order[start:start + batch]), ctx)
            runs.append(self.test(learner.model, ctx))
        report = self.report(runs, ctx)
        report.details["train_steps"] = steps
        return report

    def assess(self, models: list[torch.nn.Module], ctx) -> EvalReport:
        return self.report([self.test(model, ctx) for model in models], ctx)

    def test(self, model: torch.nn.Module, ctx) -> float:
        with ctx.final_evaluation(f"{type(self).__name__}: final test"):
            return accuracy(model, ctx.test_images, ctx.test_labels, self.test_batch_size, self.amp)

    def report(self, runs: list[float], ctx) -> EvalReport:
        teacher = self.test(ctx.role("teacher"), ctx)
        return EvalReport({"student_accuracy": Metric.of(runs), "teacher_accuracy": Metric.of([teacher])},
                          self.primary_metric, self.higher_is_better, {"kd": self.learner_settings}, unit="%")
