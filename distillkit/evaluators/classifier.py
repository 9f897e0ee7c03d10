"""The standard evaluation: train fresh networks on the distilled set, test on the real test set.

Every protocol choice is a constructor argument mirrored in ``conf/evaluator/classifier.yaml``.
Seeds ``seed, seed+1, …`` each train one fresh model per architecture; the reported number is
the accuracy of the final checkpoint, as mean ± std over seeds.
"""

from __future__ import annotations

import logging
import statistics

import torch

from distillkit.data.augment import DSA
from distillkit.errors import UserError
from distillkit.training import TrainSpec, accuracy, train_classifier

log = logging.getLogger("distillkit")


def summarise(runs: list[float]) -> dict:
    return {"mean": statistics.fmean(runs), "std": statistics.pstdev(runs) if len(runs) > 1 else 0.0,
            "runs": runs}


class ClassifierEvaluator:
    def __init__(self, models=("convnet",), epochs: int = 1000, lr: float = 0.01, use_learned_lr: bool = True,
                 optimizer: str = "sgd", momentum: float = 0.9, weight_decay: float = 5e-4,
                 batch_size: int = 256, schedule: str = "step_half", dsa: bool = True,
                 dsa_strategy: str = "color_crop_cutout_flip_scale_rotate", labels: str = "auto",
                 soft_label_temperature: float = 1.0, num_seeds: int = 3, seed: int = 0,
                 checkpoint: str = "final", amp: bool = True, test_batch_size: int = 2048):
        if labels not in ("auto", "hard", "soft"):
            raise UserError(f"evaluator.labels must be auto, hard or soft (got '{labels}')")
        if checkpoint != "final":
            raise UserError("evaluator.checkpoint: only 'final' is reported (best-on-test is not a fair protocol)")
        if int(num_seeds) < 1 or int(epochs) < 1:
            raise UserError("evaluator.num_seeds and evaluator.epochs must be at least 1")
        self.models = [models] if isinstance(models, str) else list(models)
        self.spec = TrainSpec(epochs=int(epochs), lr=lr, batch_size=int(batch_size), optimizer=optimizer,
                              momentum=momentum, weight_decay=weight_decay, schedule=schedule, amp=amp)
        self.use_learned_lr, self.labels, self.temperature = use_learned_lr, labels, soft_label_temperature
        self.dsa_strategy = dsa_strategy if dsa else None
        self.num_seeds, self.seed, self.test_batch_size = int(num_seeds), int(seed), int(test_batch_size)

    def targets(self, distilled) -> torch.Tensor:
        soft = self.labels == "soft" or (self.labels == "auto" and distilled.soft_labels is not None)
        if not soft:
            return distilled.labels
        if distilled.soft_labels is None:
            raise UserError("evaluator.labels=soft but the distilled set has no soft labels")
        return torch.softmax(distilled.soft_labels.float() / self.temperature, dim=1)

    def __call__(self, distilled, ctx) -> dict:
        distilled = distilled.to(ctx.device)
        images = distilled.images.detach()
        targets = self.targets(distilled).detach()
        lr = float(distilled.lr) if (self.use_learned_lr and distilled.lr is not None) else None
        per_model = {}
        for name in self.models:
            runs = []
            for s in range(self.seed, self.seed + self.num_seeds):
                torch.manual_seed(s)
                model = ctx.build_model(name)
                augment = DSA(self.dsa_strategy, seed=s) if self.dsa_strategy else None
                train_classifier(model, images, targets, self.spec, augment=augment, lr=lr,
                                 desc=f"eval {name} seed {s}")
                runs.append(accuracy(model, ctx.test_images, ctx.test_labels, self.test_batch_size, self.spec.amp))
                log.info("eval %s seed %d: %.2f%%", name, s, runs[-1])
            per_model[name] = summarise(runs)
        first = per_model[self.models[0]]
        return {"accuracy": first, "per_model": per_model, "labels": "soft" if targets.dtype.is_floating_point
                else "hard", "lr": lr if lr is not None else self.spec.lr}
