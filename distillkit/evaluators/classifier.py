"""The standard evaluation: train fresh networks on the distilled set, test on the real test set.

Every protocol choice is a constructor argument mirrored in ``conf/evaluator/classifier.yaml``.
Seeds ``seed, seed+1, …`` each train one fresh model per architecture; the reported number is
the accuracy of the final checkpoint, as mean ± std over seeds.

Each finished (model, seed) goes to ``run_dir/eval_progress.json`` at once, under a fingerprint of
the distilled set and the protocol, so a run interrupted during a long evaluation (IPC 50 on a CPU:
minutes per seed) resumes at the first unfinished seed instead of starting over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from pathlib import Path

import torch

from distillkit.data.augment import DSA
from distillkit.data.datasets import dataset_identity
from distillkit.errors import UserError
from distillkit.io import write_json
from distillkit.training import TrainSpec, accuracy, train_classifier

log = logging.getLogger("distillkit")


PROGRESS_NAME = "eval_progress.json"


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

    def fingerprint(self, images: torch.Tensor, targets: torch.Tensor, lr: float | None, ctx) -> str:
        """What a finished seed's accuracy depends on besides the seed: the set, the protocol, the data."""
        digest = hashlib.sha256()
        for tensor in (images, targets):
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        protocol = (self.spec, lr, self.dsa_strategy, self.test_batch_size, str(ctx.device),
                    dataset_identity(ctx.cfg.dataset))
        digest.update(repr(protocol).encode())
        return digest.hexdigest()

    def __call__(self, distilled, ctx) -> dict:
        distilled = distilled.to(ctx.device)
        images = distilled.images.detach()
        targets = self.targets(distilled).detach()
        lr = float(distilled.lr) if (self.use_learned_lr and distilled.lr is not None) else None
        progress = EvalProgress(ctx.run_dir, self.fingerprint(images, targets, lr, ctx))
        per_model = {}
        for name in self.models:
            runs = []
            for s in range(self.seed, self.seed + self.num_seeds):
                done = progress.get(name, s)
                if done is not None:
                    runs.append(done)
                    log.info("eval %s seed %d: %.2f%% (finished before the interruption, %s)", name, s, done,
                             PROGRESS_NAME)
                    continue
                torch.manual_seed(s)
                model = ctx.build_model(name)
                augment = DSA(self.dsa_strategy, seed=s) if self.dsa_strategy else None
                train_classifier(model, images, targets, self.spec, augment=augment, lr=lr,
                                 desc=f"eval {name} seed {s}")
                runs.append(accuracy(model, ctx.test_images, ctx.test_labels, self.test_batch_size, self.spec.amp))
                progress.record(name, s, runs[-1])
                log.info("eval %s seed %d: %.2f%%", name, s, runs[-1])
            per_model[name] = summarise(runs)
        first = per_model[self.models[0]]
        return {"accuracy": first, "per_model": per_model, "labels": "soft" if targets.dtype.is_floating_point
                else "hard", "lr": lr if lr is not None else self.spec.lr}


class EvalProgress:
    """Accuracies of finished (model, seed) pairs in the run directory, valid for one fingerprint."""

    def __init__(self, run_dir: Path | None, fingerprint: str):
        self.path = Path(run_dir) / PROGRESS_NAME if run_dir is not None else None
        self.fingerprint, self.runs = fingerprint, {}
        if self.path is not None and self.path.is_file():
            try:
                saved = json.loads(self.path.read_text())
            except (OSError, ValueError):
                saved = {}  # unreadable: evaluate again rather than fail the run
            if saved.get("fingerprint") == fingerprint:
                self.runs = dict(saved.get("runs", {}))

    def get(self, model: str, seed: int) -> float | None:
        return self.runs.get(f"{model}/{seed}")

    def record(self, model: str, seed: int, accuracy_percent: float) -> None:
        self.runs[f"{model}/{seed}"] = accuracy_percent
        if self.path is not None:
            write_json(self.path, {"fingerprint": self.fingerprint, "runs": self.runs})
