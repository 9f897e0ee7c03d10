"""The standard evaluation: train fresh networks on the distilled set, test on the real test set.

Every protocol choice is a constructor argument mirrored in ``conf/evaluator/classifier.yaml``.
Seeds ``seed, seed+1, …`` each train one fresh model per architecture; the reported number is
the test accuracy of the reported checkpoint, as mean ± std over seeds (metric ``accuracy``, of the first
model; every model's in ``details.per_model``).

**Selection never sees the test set.** ``checkpoint: final`` (the default) selects nothing. ``best_val``
scores the network on the held-out part of the training data (``validation:``, :attr:`Context.split`)
every ``select_every`` epochs and reports the test accuracy of the best-on-validation weights; ``lr_grid``
picks the lr on the same split. The test set is sealed (:meth:`Context.final_evaluation`): only
:meth:`ClassifierEvaluator.test` opens it — and ``best_test``, asked for by name, labelled as unfair in
results.json (``selection``) and in the final line.

**Soft labels.** ``soft_loss`` (``soft_ce`` | ``kl``) and ``soft_source`` (``stored``: the set's soft labels;
``teacher``: the ``teacher`` role's logits of each augmented batch, on the fly) — recorded in
``details.soft_labels``.

Each finished (model, seed) goes to ``run_dir/eval_progress.json`` at once (a
:class:`~distillkit.checkpoint.Checkpoint` under a fingerprint of the distilled set and the protocol),
so a run interrupted during a long evaluation (IPC 50 on a CPU: minutes per seed) resumes at the
first unfinished seed instead of starting over.

``baselines: [random, full]`` adds paired baselines and the fair metrics against them (gain over random with
its interval, HLR, IOR, LRS, ARS): :mod:`distillkit.baselines`, :mod:`distillkit.fairness`.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Literal

import torch

from distillkit import fairness
from distillkit.baselines import BASELINE_LRS, BASELINES, add_fair_metrics
from distillkit.checkpoint import EvalProgress
from distillkit.data.augment import DSA
from distillkit.errors import UserError
from distillkit.models import ModelSpec
from distillkit.stages import EvalReport, Evaluator, Metric
from distillkit.training import (OPTIMIZERS, SCHEDULES, BestWeights, TrainSpec, accuracy, optimiser_steps, precision,
                                 soft_target_loss, teacher_logits, train_classifier, training_epochs)
from distillkit.validation import (ConfigError, Int, NonNegativeFloat, NonNegativeInt, PositiveFloat,
                                   PositiveInt, plain, validated)

log = logging.getLogger("distillkit")

PROGRESS_NAME = "eval_progress.json"
# fp32: eager fp32 gives the same numbers on every host; bf16: autocast on CUDA and on CPUs with bf16 units
# (AMX / AVX512-BF16), fp32 elsewhere — the precision that ran is part of the progress fingerprint and the report
PRECISIONS = ("fp32", "bf16")

CHECKPOINTS = ("final", "best_val", "best_test")
# what results.json's ``selection`` and the final line say of each checkpoint rule
SELECTION_LABELS = {"final": "final", "best_val": "best_val (validation split)",
                    "best_test": "best_test (test-set selection: not a fair number)"}


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
                 checkpoint: Literal[CHECKPOINTS] = "final", precision: Literal[PRECISIONS] = "fp32",
                 compile: bool = False, test_batch_size: PositiveInt = 2048, min_steps: NonNegativeInt = 0,
                 select_every: PositiveInt = 25, lr_grid: list[PositiveFloat] = (),
                 soft_loss: Literal["soft_ce", "kl"] = "soft_ce", soft_source: Literal["stored", "teacher"] = "stored",
                 baselines: list[Literal[BASELINES]] = (), fair_metrics: Literal[fairness.MODES] = "fraction",
                 fair_ars: bool = False, full_epochs: PositiveInt = 2, full_min_steps: NonNegativeInt = 0,
                 full_dsa: bool = False, baselines_lr: Literal[BASELINE_LRS] = "evaluator"):
        if soft_source == "teacher":
            if labels == "hard":
                raise ConfigError("soft_source", "teacher gives soft labels: set labels to auto or soft")
            self.roles = ("teacher",)
        if not models:
            raise ConfigError("models", "needs at least one model")
        if len(set(baselines)) != len(baselines):
            raise ConfigError("baselines", f"lists a baseline twice: {list(baselines)}")
        if fair_ars and not (dsa and "random" in baselines):
            raise ConfigError("fair_ars", "needs dsa: true and the random baseline (evaluator.baselines: [random])")
        self.models = [plain(m) for m in models]
        self.spec = TrainSpec(epochs=epochs, lr=lr, batch_size=batch_size, optimizer=optimizer,
                              momentum=momentum, weight_decay=weight_decay, schedule=schedule,
                              amp=precision == "bf16", amp_on_cpu=precision == "bf16", compile=compile,
                              min_steps=min_steps)
        self.use_learned_lr, self.labels, self.temperature = use_learned_lr, labels, soft_label_temperature
        self.dsa_strategy = dsa_strategy if dsa else None
        self.num_seeds, self.seed, self.test_batch_size = num_seeds, seed, test_batch_size
        self.checkpoint, self.select_every, self.lr_grid = checkpoint, select_every, [float(v) for v in lr_grid]
        self.soft_loss, self.soft_source = soft_loss, soft_source
        self.selected_epochs: list[int] = []  # the last evaluation's, for its report
        self.baselines, self.fair_metrics, self.fair_ars = tuple(baselines), fair_metrics, fair_ars
        self.full_epochs, self.full_min_steps, self.full_dsa = full_epochs, full_min_steps, full_dsa
        self.baselines_lr = baselines_lr

    def check(self, ctx) -> None:
        """Every model must be buildable for the dataset's images (found now, not after distillation)."""
        for model in self.models:
            ctx.build_model(model)

    def soft(self, distilled) -> bool:
        """Whether the networks learn soft labels (the set's, or the teacher's with ``soft_source: teacher``)."""
        if self.soft_source == "teacher":
            return True
        soft = self.labels == "soft" or (self.labels == "auto" and distilled.soft_labels is not None)
        if soft and distilled.soft_labels is None:
            raise UserError("evaluator.labels=soft but the distilled set has no soft labels")
        return soft

    def targets(self, distilled) -> torch.Tensor:
        """The per-image targets: class indices, or ``softmax(soft_labels / T)``. A teacher's soft labels are
        made per batch (:meth:`loss_fn`), so its targets here are the class indices (the fingerprint's)."""
        if not self.soft(distilled) or self.soft_source == "teacher":
            return distilled.labels
        return torch.softmax(distilled.soft_labels.float() / self.temperature, dim=1)

    def loss_fn(self, distilled, ctx):
        """:func:`train_classifier`'s ``loss_fn`` for soft labels other than stored ones with soft CE (that one is
        the default loss on :meth:`targets`), else None."""
        if not self.soft(distilled) or (self.soft_source == "stored" and self.soft_loss == "soft_ce"):
            return None
        if self.soft_source == "teacher":
            teacher = ctx.role("teacher")
            return lambda logits, x, idx: soft_target_loss(logits, teacher_logits(teacher, x, self.spec.amp),
                                                           self.soft_loss, self.temperature)
        stored = distilled.soft_labels
        return lambda logits, x, idx: soft_target_loss(logits, stored[idx], self.soft_loss, self.temperature)

    def selection_score(self, ctx):
        """What ``checkpoint`` selects on: accuracy on the validation split (best_val) or the test set
        (best_test, by name); None for ``final``."""
        if self.checkpoint == "best_test":
            return lambda model: self.test(model, ctx, reader="checkpoint=best_test")
        if self.checkpoint == "best_val":
            return lambda model: self.validate(model, ctx)
        return None

    def fit(self, model, images, targets, lr, ctx, augment=None, loss_fn=None, desc="eval"):
        """Train ``model`` in place (the one loop) under this protocol and load the weights ``checkpoint`` selects
        (their epoch goes to ``selected_epochs``)."""
        score = self.selection_score(ctx)
        keeper = None if score is None else BestWeights(model, score, self.select_every,
                                                         training_epochs(self.spec, len(images)))
        train_classifier(model, images, targets, self.spec, augment=augment, lr=lr, desc=desc, loss_fn=loss_fn,
                         after_epoch=keeper)
        if keeper is not None:
            keeper.restore()
            self.selected_epochs.append(keeper.best[1])
        return model

    def pick_lr(self, model_cfg, images, targets, loss_fn, ctx) -> tuple[float, dict]:
        """The lr of ``lr_grid`` whose network (seed ``seed``, the protocol's checkpoint) is most accurate on the
        validation split; every lr's validation accuracy."""
        scores = {}
        for lr in self.lr_grid:
            torch.manual_seed(self.seed)
            model = ctx.build_model(model_cfg)
            augment = DSA(self.dsa_strategy, seed=self.seed) if self.dsa_strategy else None
            self.fit(model, images, targets, lr, ctx, augment, loss_fn, desc=f"lr grid {lr:g}")
            scores[lr] = self.validate(model, ctx)
            log.info("eval lr grid %g: %.2f%% on the validation split", lr, scores[lr])
        return max(scores, key=scores.get), scores

    def protocol(self, lr: float | None, ctx) -> str:
        """How a network is trained, selected and tested, as text: with the set and the seed, all a result
        depends on."""
        protocol = (self.spec, self.precision(ctx), lr, self.dsa_strategy, self.test_batch_size, str(ctx.device),
                    ctx.dataset_identity)
        # the keys added later extend it only when set, so progress made under the defaults still resumes
        if self.checkpoint != "final" or self.lr_grid:
            protocol += (self.checkpoint, self.select_every, self.lr_grid, plain(ctx.cfg.validation))
        if (self.soft_loss, self.soft_source) != ("soft_ce", "stored"):
            protocol += (self.soft_loss, self.soft_source, self.temperature)
        return repr(protocol)

    def fingerprint(self, images: torch.Tensor, targets: torch.Tensor, lr: float | None, ctx) -> str:
        """What a finished seed's accuracy depends on besides the seed: the set, the protocol, the data."""
        digest = hashlib.sha256()
        for tensor in (images, targets):
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        digest.update(self.protocol(lr, ctx).encode())
        return digest.hexdigest()

    def __call__(self, distilled, ctx) -> EvalReport:
        distilled = distilled.to(ctx.device)
        images = distilled.images.detach()
        targets = self.targets(distilled).detach()
        loss_fn = self.loss_fn(distilled, ctx)
        lr = float(distilled.lr) if (self.use_learned_lr and distilled.lr is not None) else None
        if lr is not None and not lr > 0:  # SGD on a learned lr can carry it through 0: a student stepping uphill
            raise UserError(f"the set's learned lr is {lr:.4g}, not a learning rate: evaluate it with "
                            "evaluator.use_learned_lr=false (the evaluator's lr)")
        progress = EvalProgress(ctx.run_dir, PROGRESS_NAME, self.fingerprint(images, targets, lr, ctx))
        per_model, grids, self.selected_epochs = {}, {}, []
        for model_cfg in self.models:
            name = self.model_name(model_cfg)
            if self.lr_grid:
                lr, grids[name] = self.pick_lr(model_cfg, images, targets, loss_fn, ctx)
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
                self.fit(model, images, targets, lr, ctx, augment, loss_fn, desc=f"eval {name} seed {s}")
                runs.append(self.test(model, ctx))
                progress.record(name, s, runs[-1])
                log.info("eval %s seed %d: %.2f%%", name, s, runs[-1])
            per_model[name] = Metric.of(runs)
        soft = self.soft(distilled)
        report = self.report(per_model, labels="soft" if soft else "hard", lr=lr if lr is not None else self.spec.lr)
        report.details["train_steps"] = optimiser_steps(self.spec, len(images))
        report.details["selection"] = SELECTION_LABELS[self.checkpoint]
        if self.checkpoint != "final":
            report.details["selection_every_epochs"] = self.select_every
            report.details["selected_epochs"] = self.selected_epochs  # of each trained network, grid ones first
        if self.checkpoint == "best_val" or self.lr_grid:
            report.details["validation_images"] = len(ctx.split.held_out_labels)
        if grids:
            report.details["lr_grid"] = {name: {str(k): v for k, v in grid.items()} for name, grid in grids.items()}
        if soft:
            report.details["soft_labels"] = {"loss": self.soft_loss, "source": self.soft_source,
                                             "temperature": self.temperature}
        report.details["precision"] = self.precision(ctx)
        if self.baselines:
            add_fair_metrics(self, distilled, report, ctx)
        return report

    def precision(self, ctx) -> str:
        """What the networks train and test in on this device: bf16 needs CUDA or a CPU with bf16 units."""
        return precision(ctx.device, self.spec.amp, self.spec.amp_on_cpu)

    def assess(self, models: list[torch.nn.Module], ctx) -> EvalReport:
        """Test networks trained elsewhere (a ``rounds`` learner's) on the real test set."""
        report = self.report({"learner": Metric.of([self.test(model, ctx) for model in models])}, labels=None,
                             lr=None)
        report.details["selection"] = "final (the learner's network)"
        return report

    def test(self, model: torch.nn.Module, ctx, reader: str = "final test") -> float:
        """Accuracy on the real test set: the one place the classifier evaluator opens it."""
        with ctx.final_evaluation(f"{type(self).__name__}: {reader}"):
            return accuracy(model, ctx.test_images, ctx.test_labels, self.test_batch_size, self.spec.amp,
                            self.spec.amp_on_cpu, self.spec.compile)

    def validate(self, model: torch.nn.Module, ctx) -> float:
        """Accuracy on the validation split (held out of the training data: ``validation:``)."""
        split = ctx.split
        return accuracy(model, split.held_out_images, split.held_out_labels, self.test_batch_size, self.spec.amp,
                        self.spec.amp_on_cpu, self.spec.compile)

    def report(self, per_model: dict[str, Metric], labels: str | None, lr: float | None) -> EvalReport:
        first = next(iter(per_model.values()))
        details = {"per_model": {k: m.as_dict() for k, m in per_model.items()}, "labels": labels, "eval_lr": lr}
        return EvalReport({"accuracy": first}, self.primary_metric, self.higher_is_better, details, unit="%")

    @staticmethod
    def model_name(model_cfg) -> str:
        return model_cfg if isinstance(model_cfg, str) else str(model_cfg.get("name"))
