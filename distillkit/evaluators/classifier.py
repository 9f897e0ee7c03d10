"""The standard evaluation: train fresh networks on the distilled set, test on the real test set.

Every protocol choice is a constructor argument mirrored in ``conf/evaluator/classifier.yaml``.
Seeds ``seed, seed+1, …`` each train one fresh model per architecture; the reported number is
the accuracy of the final checkpoint, as mean ± std over seeds (metric ``accuracy``, of the first
model; every model's in ``details.per_model``).

Each finished (model, seed) goes to ``run_dir/eval_progress.json`` at once (a
:class:`~distillkit.checkpoint.Checkpoint` under a fingerprint of the distilled set and the protocol),
so a run interrupted during a long evaluation (IPC 50 on a CPU: minutes per seed) resumes at the
first unfinished seed instead of starting over.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Literal

import torch

from distillkit.checkpoint import EvalProgress
from distillkit.data.augment import DSA
from distillkit.errors import UserError
from distillkit.stages import EvalReport, Evaluator, Metric
from distillkit.training import (OPTIMIZERS, SCHEDULES, TrainSpec, accuracy, optimiser_steps, precision,
                                 train_classifier)
from distillkit.validation import (ConfigError, Int, ModelSpec, NonNegativeFloat, NonNegativeInt, PositiveFloat,
                                   PositiveInt, plain, validated)

log = logging.getLogger("distillkit")

PROGRESS_NAME = "eval_progress.json"
# fp32: eager fp32 gives the same numbers on every host; bf16: autocast on CUDA and on CPUs with bf16 units
# (AMX / AVX512-BF16), fp32 elsewhere — the precision that ran is part of the progress fingerprint and the report
PRECISIONS = ("fp32", "bf16")


class ClassifierEvaluator(Evaluator):
    primary_metric = "accuracy"
    higher_is_better = True

    @validated
    def __init__(self, models: list[ModelSpec] = ("convnet",), epochs: PositiveInt = 1000, lr: PositiveFloat = 0.01,
                 use_learned_lr: bool = True, optimizer: Literal[OPTIMIZERS] = "sgd", momentum: NonNegativeFloat = 0.9,
                 weight_decay: NonNegativeFloat = 5e-4, batch_size: PositiveInt = 256,
                 schedule: Literal[SCHEDULES] = "step_half", dsa: bool = True,
                 dsa_strategy: str = "color_crop_cutout_flip_scale_rotate", labels: Literal["auto", "hard", "soft"] = "auto",
                 soft_label_temperature: PositiveFloat = 1.0, num_seeds: PositiveInt = 3, seed: Int = 0,
                 checkpoint: str = "final", precision: Literal[PRECISIONS] = "fp32", compile: bool = False,
                 test_batch_size: PositiveInt = 2048, min_steps: NonNegativeInt = 0):
        if checkpoint != "final":
            raise ConfigError("checkpoint", "only 'final' is reported (best-on-test is not a fair protocol)")
        if not models:
            raise ConfigError("models", "needs at least one model")
        self.models = [plain(m) for m in models]
        self.spec = TrainSpec(epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
                              momentum=momentum, weight_decay=weight_decay, schedule=schedule,
                              amp=precision == "bf16", amp_on_cpu=precision == "bf16", compile=compile,
                              min_steps=min_steps)
        self.use_learned_lr, self.labels, self.temperature = use_learned_lr, labels, soft_label_temperature
        self.dsa_strategy = dsa_strategy if dsa else None
        self.num_seeds, self.seed, self.test_batch_size = num_seeds, seed, test_batch_size

    def check(self, ctx) -> None:
        """Every model must be buildable for the dataset's images (found now, not after distillation)."""
        for model in self.models:
            ctx.build_model(model)

    def targets(self, distilled) -> torch.Tensor:
        soft = self.labels == "soft" or (self.labels == "auto" and distilled.soft_labels is not None)
        if not soft:
            return distilled.labels
        if distilled.soft_labels is None:
            raise UserError("evaluator.labels=soft but the distilled set has no soft labels")
        return torch.softmax(distilled.soft_labels.float() / self.temperature, dim=1)

    def fingerprint(self, images: torch.Tensor, targets: torch.Tensor, lr: float | None, ctx) -> str:
        """What a finished seed's accuracy depends on besides the seed: the set, the protocol, the data."""
        digest = hashlib.sha256()
        for tensor in (images, targets):
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        protocol = (self.spec, self.precision(ctx), lr, self.dsa_strategy, self.test_batch_size, str(ctx.device),
                    ctx.dataset_identity)
        digest.update(repr(protocol).encode())
        return digest.hexdigest()

    def __call__(self, distilled, ctx) -> EvalReport:
        distilled = distilled.to(ctx.device)
        images = distilled.images.detach()
        targets = self.targets(distilled).detach()
        lr = float(distilled.lr) if (self.use_learned_lr and distilled.lr is not None) else None
        progress = EvalProgress(ctx.run_dir, PROGRESS_NAME, self.fingerprint(images, targets, lr, ctx))
        per_model = {}
        for model_cfg in self.models:
            name = self.model_name(model_cfg)
            runs = []
            for s in range(self.seed, self.seed + self.num_seeds):
                done = progress.get(name, s)
                if done is not None:
                    runs.append(done)
                    log.info("eval %s seed %d: %.2f%% (finished before the interruption, %s)", name, s, done,
                             PROGRESS_NAME)
                    continue
                torch.manual_seed(s)
                model = ctx.build_model(model_cfg)
                augment = DSA(self.dsa_strategy, seed=s) if self.dsa_strategy else None
                train_classifier(model, images, targets, self.spec, augment=augment, lr=lr,
                                 desc=f"eval {name} seed {s}")
                runs.append(self.test(model, ctx))
                progress.record(name, s, runs[-1])
                log.info("eval %s seed %d: %.2f%%", name, s, runs[-1])
            per_model[name] = Metric.of(runs)
        report = self.report(per_model, labels="soft" if targets.dtype.is_floating_point else "hard",
                             lr=lr if lr is not None else self.spec.lr)
        report.details["train_steps"] = optimiser_steps(self.spec, len(images))
        report.details["precision"] = self.precision(ctx)
        return report

    def precision(self, ctx) -> str:
        """What the networks train and test in on this device: bf16 needs CUDA or a CPU with bf16 units."""
        return precision(ctx.device, self.spec.amp, self.spec.amp_on_cpu)

    def assess(self, models: list[torch.nn.Module], ctx) -> EvalReport:
        """Test networks trained elsewhere (a ``rounds`` learner's) on the real test set."""
        return self.report({"learner": Metric.of([self.test(model, ctx) for model in models])}, labels=None, lr=None)

    def test(self, model: torch.nn.Module, ctx) -> float:
        return accuracy(model, ctx.test_images, ctx.test_labels, self.test_batch_size, self.spec.amp,
                        self.spec.amp_on_cpu, self.spec.compile)

    def report(self, per_model: dict[str, Metric], labels: str | None, lr: float | None) -> EvalReport:
        first = next(iter(per_model.values()))
        details = {"per_model": {k: m.as_dict() for k, m in per_model.items()}, "labels": labels, "eval_lr": lr}
        return EvalReport({"accuracy": first}, self.primary_metric, self.higher_is_better, details, unit="%")

    @staticmethod
    def model_name(model_cfg) -> str:
        return model_cfg if isinstance(model_cfg, str) else str(model_cfg.get("name"))
