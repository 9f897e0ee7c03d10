"""The one inner training loop: fit a classifier on in-memory tensors, and test it.

Used by the evaluator (train on the distilled set), by teachers (train on real data) and by
every later stage that trains a network. Everything stays on the device: batches are index
slices of a device tensor, the permutation is drawn on the device, and nothing in the loop
reads a value back to the host — the only sync is the final accuracy.
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
import shutil
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from distillkit.errors import DivergedError, UserError
from distillkit.progress import progress
from distillkit.validation import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

log = logging.getLogger("distillkit")

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("step_half", "cosine", "constant")


@dataclass
class TrainSpec:
    """Every protocol choice of a training run, explicit (see ``conf/evaluator/classifier.yaml``).

    As a config argument (a role's ``train:``) it is validated field by field (distillkit.validation).
    """

    epochs: NonNegativeInt
    lr: PositiveFloat = 0.01
    batch_size: PositiveInt = 256
    optimizer: Literal[OPTIMIZERS] = "sgd"
    momentum: NonNegativeFloat = 0.9
    weight_decay: NonNegativeFloat = 5e-4
    schedule: Literal[SCHEDULES] = "step_half"  # step_half | cosine | constant
    amp: bool = True  # bf16 autocast where the device is CUDA
    amp_on_cpu: bool = False  # also on CPUs with native bf16 units: distillation stages (experts); evaluation with precision=bf16
    min_steps: NonNegativeInt = 0  # a floor on optimiser steps: more epochs on a small dataset
    compile: bool = False  # torch.compile the network (fused kernels: fp32 results then differ in rounding only)

    def total_steps(self, steps_per_epoch: int) -> int:
        """Optimiser steps: ``epochs`` passes, or ``min_steps`` when that is more (the last pass then stops
        part-way) — a budget that scales with the data."""
        return max(self.epochs * steps_per_epoch, self.min_steps)


def make_optimizer(params, spec: TrainSpec, lr: float):
    if spec.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=spec.weight_decay)
    if spec.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=spec.weight_decay)
    raise UserError(f"unknown optimizer '{spec.optimizer}' (sgd, adam, adamw)")


def make_schedule(optimizer, spec: TrainSpec, steps_per_epoch: int):
    total = max(1, spec.total_steps(steps_per_epoch))
    if spec.schedule == "step_half":  # DC/DSA/DM/MTT: ×0.1 once, at half of training
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, [max(1, total // 2)], gamma=0.1)
    if spec.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5 * (1 + math.cos(math.pi * s / total)))
    if spec.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    raise UserError(f"unknown schedule '{spec.schedule}' (step_half, cosine, constant)")


@functools.cache
def cpu_has_bf16_units() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX or AVX512-BF16), where bf16 autocast is a speed-up."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def bf16_applies(device: torch.device, enabled: bool, on_cpu: bool = False) -> bool:
    """Whether :func:`autocast` turns bf16 on: on CUDA; with ``on_cpu`` also on a CPU with native bf16 units.

    Evaluation and teacher training stay in fp32 on the CPU (``on_cpu=False``) so that their
    numbers do not depend on the host's instruction set.
    """
    return enabled and (device.type == "cuda" or (on_cpu and device.type == "cpu" and cpu_has_bf16_units()))


def precision(device: torch.device, enabled: bool, on_cpu: bool = False) -> str:
    """"bf16" or "fp32": what :func:`autocast` runs in on ``device`` (part of every cache key)."""
    return "bf16" if bf16_applies(device, enabled, on_cpu) else "fp32"


def train_settings(spec: TrainSpec) -> dict:
    """``spec`` for a cache key, without the ``amp`` switches (the key records the precision that ran), and
    without ``compile`` when it is off, so that the keys of the roles cached before it existed still match."""
    dropped = ("amp", "amp_on_cpu") if spec.compile else ("amp", "amp_on_cpu", "compile")
    return {k: v for k, v in vars(spec).items() if k not in dropped}


def can_compile(device: torch.device, who: str) -> bool:
    """Whether ``torch.compile`` can run on ``device``: on a CPU it needs a C++ compiler (else ``who`` runs eagerly)."""
    if device.type == "cpu" and shutil.which(os.environ.get("CXX", "g++")) is None:
        log.warning("%s: compile needs a C++ compiler on the CPU (none found); running eagerly", who)
        return False
    return True


def compiled(model: nn.Module, enabled: bool, who: str) -> nn.Module:
    """``model`` through ``torch.compile`` (static shapes) when ``enabled`` and possible; its parameters stay the
    model's. A fresh model of the same architecture reuses the compiled graphs, so only the first pays."""
    if enabled and can_compile(next(model.parameters()).device, who):
        return torch.compile(model, dynamic=False)
    return model


def autocast(device: torch.device, enabled: bool, on_cpu: bool = False):
    if bf16_applies(device, enabled, on_cpu):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def classification_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against hard labels (int) or soft targets (float probabilities, N×K)."""
    if targets.dtype.is_floating_point:
        return torch.sum(-targets * F.log_softmax(logits.float(), dim=1), dim=1).mean()
    return F.cross_entropy(logits.float(), targets)


def kd_per_sample(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(σ(t/T) ‖ σ(s/T)) · T²`` of each sample (Hinton et al.'s scaling keeps gradients comparable across T)."""
    log_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return (log_t.exp() * (log_t - log_s)).sum(1) * temperature ** 2


@torch.no_grad()
def teacher_logits(teacher: nn.Module, x: torch.Tensor, amp: bool = True) -> torch.Tensor:
    """A frozen teacher's fp32 logits of a batch (KD and soft labels made on the fly)."""
    with autocast(x.device, amp):
        return teacher(x).float()


def soft_target_loss(logits: torch.Tensor, reference_logits: torch.Tensor, kind: str, temperature: float):
    """The loss against soft labels given as logits (stored with the set, or a teacher's): ``soft_ce`` —
    cross-entropy of the student (at T=1) against ``softmax(reference / T)``; ``kl`` — ``KL · T²`` with both
    sides at temperature ``T`` (:func:`kd_per_sample`). Batch mean."""
    if kind == "kl":
        return kd_per_sample(logits, reference_logits, temperature).mean()
    return classification_loss(logits, torch.softmax(reference_logits.float() / temperature, dim=1))


def train_classifier(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, spec: TrainSpec,
                     augment=None, lr: float | None = None, desc: str = "train",
                     generator: torch.Generator | None = None,
                     loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                     after_epoch: Callable[[int], None] | None = None) -> nn.Module:
    """Train ``model`` in place on (images, targets) for ``spec.epochs`` epochs — or ``spec.min_steps``
    optimiser steps when that is more — and return it.

    ``targets`` are class indices or per-sample probability vectors. ``lr`` overrides
    ``spec.lr`` (a distilled set's learned lr). Raises :class:`DivergedError` on a NaN loss,
    checked once at the end so the loop never waits on the device. Two hooks: ``loss_fn(logits, x, idx)``
    replaces :func:`classification_loss` (soft labels from a teacher, KL), ``x`` the augmented batch and
    ``idx`` its indices; ``after_epoch(epochs_done)`` runs after every epoch (checkpoint selection).
    """
    device = images.device
    n = len(images)
    batch = min(spec.batch_size, n)
    steps = math.ceil(n / batch)
    optimizer = make_optimizer(model.parameters(), spec, spec.lr if lr is None else lr)
    schedule = make_schedule(optimizer, spec, steps)
    forward = compiled(model, spec.compile, desc)
    model.train()
    last_loss = torch.zeros((), device=device)
    total = spec.total_steps(steps)
    for epoch in progress(range(math.ceil(total / steps)), desc=desc, leave=False):
        order = torch.randperm(n, device=device, generator=generator)
        for s in range(min(steps, total - epoch * steps)):
            idx = order[s * batch:(s + 1) * batch]
            x = images[idx]
            if augment is not None:
                x = augment(x)
            with autocast(device, spec.amp, spec.amp_on_cpu):
                logits = forward(x)
                loss = classification_loss(logits, targets[idx]) if loss_fn is None else loss_fn(logits, x, idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            last_loss = loss.detach()
        if after_epoch is not None:
            after_epoch(epoch + 1)
            model.train()
    if not torch.isfinite(last_loss):
        raise DivergedError(f"{desc}: the training loss became {last_loss.item()} "
                            "(lower the lr or check the distilled images for extreme values)")
    return model


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 2048,
             amp: bool = True, on_cpu: bool = False, compile: bool = False) -> float:
    """Top-1 accuracy in percent; one host sync at the end. ``amp``/``on_cpu`` as in :func:`autocast`."""
    model.eval()
    forward = compiled(model, compile, "test")
    correct = torch.zeros((), dtype=torch.long, device=images.device)
    for start in range(0, len(images), batch_size):
        with autocast(images.device, amp, on_cpu):
            logits = forward(images[start:start + batch_size])
        correct += (logits.argmax(1) == labels[start:start + batch_size]).sum()
    return 100.0 * correct.item() / max(1, len(images))


class BestWeights:
    """Checkpoint selection as a :func:`train_classifier` ``after_epoch`` hook: every ``every`` epochs (and after
    the last, ``epochs``) ``score(model)`` is taken; :meth:`restore` loads the weights that scored highest
    (the earliest on a tie). ``history`` holds (epoch, score) for results.json."""

    def __init__(self, model: nn.Module, score: Callable[[nn.Module], float], every: int, epochs: int):
        self.model, self.score, self.every, self.epochs = model, score, every, epochs
        self.best: tuple[float, int] | None = None
        self.weights = None
        self.history: list[tuple[int, float]] = []

    def __call__(self, epoch: int) -> None:
        if epoch % self.every and epoch != self.epochs:
            return
        value = self.score(self.model)
        self.history.append((epoch, value))
        if self.best is None or value > self.best[0]:
            self.best, self.weights = (value, epoch), copy.deepcopy(self.model.state_dict())

    def restore(self) -> nn.Module:
        if self.weights is not None:
            self.model.load_state_dict(self.weights)
        return self.model


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, batch_size: int = 2048, embed: bool = False) -> torch.Tensor:
    """Logits (or embeddings with ``embed=True``) for ``images``, batched, in eval mode."""
    model.eval()
    fn = model.embed if embed else model
    return torch.cat([fn(images[s:s + batch_size]).float() for s in range(0, len(images), batch_size)])


def optimiser_steps(spec: TrainSpec, num_images: int) -> int:
    """How many optimiser steps :func:`train_classifier` takes for ``spec`` on ``num_images`` images."""
    return spec.total_steps(math.ceil(num_images / min(spec.batch_size, num_images)))


def training_epochs(spec: TrainSpec, num_images: int) -> int:
    """How many epochs (passes, the last maybe partial) :func:`train_classifier` runs on ``num_images`` images."""
    per_epoch = math.ceil(num_images / min(spec.batch_size, num_images))
    return math.ceil(optimiser_steps(spec, num_images) / per_epoch)
