"""Teacher inversion: images synthesised from a trained teacher alone, a batch per call (the ``rounds``
schedule's stream for SSD-KD, Fast-DFKD and DeepInversion; docs/methods/ssdkd.md).

Each call draws ``per_class`` target labels per class and optimises, for ``g_steps`` Adam steps,

    L = bn · Σ_l (‖μ_l(x) − μ_l^BN‖₂ + ‖σ²_l(x) − σ²_l^BN‖₂) + mean_i w_i · (oh · CE(f_t(x_i), y_i) + adv · A_i)

over the images x: the statistics at the input of every teacher BatchNorm against its running ones
(:class:`BNStatistics`; the teacher must have them), cross-entropy to the targets, and the adversarial
term ``A_i = −KL(p_t ‖ p_s)(x_i) · 1(argmax p_s = argmax p_t)`` against the ``student`` role (the network the
learner trains — the same object, read here without touching its weights), after ``adv_warmup`` calls.
``w_i`` is 1, or — given a ``weighting`` scorer (SSD-KD: ``${scorer}``) — its φ on the teacher's outputs,
normalised to mean 1.

``mode: generator`` (Fast-DFKD): x = g(z), a small generator network (Linear → BN → up → conv-BN-LeakyReLU → up →
conv-BN-LeakyReLU → conv → sigmoid) kept across calls, with a fresh latent z per call optimised alongside it;
``meta: true`` makes the kept generator a first-order MAML meta-learner (each call adapts a copy, whose
gradients accumulate into the kept one, updated once per call). ``mode: pixels`` (DeepInversion): x itself,
drawn from noise each call. The returned images are the final x, normalised like the dataset, labelled with
their targets, with the teacher's logits as soft labels.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from distillkit.data.synthetic import SyntheticSet
from distillkit.roles import forked_rng
from distillkit.selection import SeededDraws
from distillkit.stages import Generator
from distillkit.training import kd_per_sample
from distillkit.validation import (ConfigError, Int, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, build,
                                   validated)

BETAS = (0.5, 0.999)  # Adam's betas for every optimiser here (Fast-DFKD's)


class InversionGenerator(nn.Module):
    """Fast-DFKD's generator, sized by the dataset: a ``nz`` latent to ``channels`` × ``image_size`` in [0, 1]."""

    def __init__(self, nz: int, ngf: int, channels: int, image_size: tuple[int, int]):
        super().__init__()
        self.image_size = tuple(image_size)
        self.init = tuple(math.ceil(s / 4) for s in self.image_size)
        self.fc = nn.Linear(nz, 2 * ngf * self.init[0] * self.init[1])
        self.body = nn.Sequential(
            nn.BatchNorm2d(2 * ngf), nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, 2 * ngf, 3, padding=1, bias=False), nn.BatchNorm2d(2 * ngf), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, ngf, 3, padding=1, bias=False), nn.BatchNorm2d(ngf), nn.LeakyReLU(0.2),
            nn.Conv2d(ngf, channels, 3, padding=1), nn.Sigmoid())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.body(self.fc(z).view(len(z), -1, *self.init))
        return x if tuple(x.shape[2:]) == self.image_size else F.interpolate(x, size=self.image_size, mode="bilinear")


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` that keep running statistics."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]


class BNStatistics:
    """While active, every forward of the model adds, for each BatchNorm layer, ``‖μ − μ^BN‖₂ + ‖σ² − σ²^BN‖₂``
    of the batch at the layer's input (biased variance, as BN normalises with) to :attr:`loss`."""

    def __init__(self, model: nn.Module):
        self.loss = torch.zeros(())
        self.handles = [m.register_forward_hook(self.hook) for m in batch_norms(model)]

    def hook(self, module, inputs, output) -> None:
        x = inputs[0].float()
        dims = [0, *range(2, x.ndim)]
        mean, var = x.mean(dims), x.var(dims, unbiased=False)
        self.loss = self.loss.to(x.device) + torch.linalg.vector_norm(mean - module.running_mean) + \
            torch.linalg.vector_norm(var - module.running_var)

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@contextmanager
def bn_statistics(model: nn.Module):
    """:class:`BNStatistics` of ``model`` for the duration of the block (the teacher is a shared role)."""
    stats = BNStatistics(model)
    try:
        yield stats
    finally:
        stats.remove()


def adversarial(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Per sample ``−KL(p_t ‖ p_s) · 1(argmax p_s = argmax p_t)``: minimising it drives the images to where the
    student, still agreeing with the teacher, disagrees most with its distribution."""
    agree = (student_logits.argmax(1) == teacher_logits.argmax(1)).float()
    return -kd_per_sample(student_logits, teacher_logits, 1.0) * agree


@contextmanager
def read_only(model: nn.Module):
    """``model`` in eval mode with no gradients for its weights (gradients still flow to its input); restored after."""
    training, flags = model.training, [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        model.train(training)
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)


class TeacherInversion(SeededDraws, Generator):
    """Options mirror ``conf/generator/teacher_inversion.yaml``; state: the generator network and its
    optimiser, the calls made (the adversarial warm-up), the latent / label / pixel RNG."""

    @validated
    def __init__(self, per_class: PositiveInt = 10, mode: Literal["generator", "pixels"] = "generator",
                 nz: PositiveInt = 256, ngf: PositiveInt = 64, g_steps: PositiveInt = 2, meta: bool = True,
                 lr_g: PositiveFloat = 5e-3, lr_z: PositiveFloat = 0.015, lr_pixels: PositiveFloat = 0.05,
                 bn: NonNegativeFloat = 10.0, oh: NonNegativeFloat = 0.5, adv: NonNegativeFloat = 1.33,
                 adv_warmup: NonNegativeInt = 0, weighting: dict | None = None, seed: Int = 0):
        if meta and mode == "pixels":
            raise ConfigError("meta", "pixel optimisation (mode: pixels) has no generator to meta-learn; set meta: false")
        self.per_class, self.mode, self.nz, self.ngf, self.g_steps, self.meta = per_class, mode, nz, ngf, g_steps, meta
        self.lr_g, self.lr_z, self.lr_pixels = lr_g, lr_z, lr_pixels
        self.bn, self.oh, self.adv, self.adv_warmup, self.seed = bn, oh, adv, adv_warmup, seed
        self.weighting = build(weighting, "weighting") if weighting is not None else None
        if self.weighting is not None and not hasattr(self.weighting, "phi"):
            raise ConfigError("weighting", f"{type(self.weighting).__name__} gives no per-sample φ "
                              "(use a modulating scorer: ${scorer} with scorer=modulating, or null)")
        # the student is read only for the adversarial term
        self.roles = ("teacher", "student") if adv > 0 else ("teacher",)
        self.calls = 0
        self.net: InversionGenerator | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.pending: dict | None = None  # a state loaded before the network was built

    def check(self, ctx) -> None:
        role = ctx.roles.role("teacher")
        if not hasattr(role, "model"):  # a role handed over in code: checked when it is used
            return
        with forked_rng(ctx):
            teacher = ctx.build_model(role.model)
        if not batch_norms(teacher):
            spec = role.model if isinstance(role.model, dict) else {"name": role.model}
            norm = f", norm: {spec['norm']}" if "norm" in spec else ""
            raise ConfigError(f"{role.key}.model", f"{self.key or 'generator'}: teacher inversion matches the "
                              f"teacher's BatchNorm running statistics, but the teacher ({spec.get('name')}{norm}) has "
                              "no BatchNorm layer; pick one that has (model@roles.teacher.model=convnet_bn)")

    def build_network(self, ctx) -> None:
        if self.mode == "generator" and self.net is None:
            with forked_rng(ctx):
                torch.manual_seed(ctx.seed + self.seed)
                self.net = InversionGenerator(self.nz, self.ngf, ctx.data.channels, ctx.data.image_size).to(ctx.device)
            # the meta-optimiser (meta: true) or the generator's own optimiser, kept across calls
            self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr_g, betas=BETAS)
        if self.pending is not None:
            if self.net is not None:
                self.net.load_state_dict(self.pending["net"])
                self.optimizer.load_state_dict(self.pending["optimizer"])
            self.pending = None

    def __call__(self, ctx) -> SyntheticSet:
        self.build_network(ctx)
        teacher = ctx.role("teacher")
        student = ctx.role("student") if self.adv > 0 and self.calls >= self.adv_warmup else None
        draws = self.draws(ctx.seed + self.seed)
        classes = ctx.data.num_classes
        targets = torch.arange(classes).repeat(self.per_class).to(ctx.device)  # classes interleaved: ties spread
        mean = torch.tensor(ctx.data.mean, device=ctx.device).view(1, -1, 1, 1)
        std = torch.tensor(ctx.data.std, device=ctx.device).view(1, -1, 1, 1)
        if self.mode == "pixels":
            pixels = torch.randn(len(targets), ctx.data.channels, *ctx.data.image_size, generator=draws)
            pixels = pixels.to(ctx.device).requires_grad_()
            net, optimizer = None, torch.optim.Adam([pixels], lr=self.lr_pixels, betas=BETAS)
            make = lambda: torch.sigmoid(pixels)  # noqa: E731
        else:
            z = torch.randn(len(targets), self.nz, generator=draws).to(ctx.device).requires_grad_()
            net = copy.deepcopy(self.net) if self.meta else self.net
            groups = [{"params": [z], "lr": self.lr_z}] + ([{"params": net.parameters(), "lr": self.lr_g}]
                                                           if self.meta else [])
            optimizer = torch.optim.Adam(groups, betas=BETAS)
            make = lambda: net(z)  # noqa: E731
            self.optimizer.zero_grad(set_to_none=True)
        for _ in range(self.g_steps):
            x = (make() - mean) / std
            loss = self.loss(x, targets, teacher, student)
            optimizer.zero_grad(set_to_none=True)
            if net is not None and not self.meta:
                self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if net is not None and self.meta:  # first-order MAML: the adapted copy's gradients, summed
                for slow, fast in zip(self.net.parameters(), net.parameters()):
                    if fast.grad is not None:
                        slow.grad = fast.grad.clone() if slow.grad is None else slow.grad + fast.grad
            elif net is not None:
                self.optimizer.step()
        if net is not None and self.meta:
            self.optimizer.step()
        with torch.no_grad():
            images = ((make() - mean) / std).detach()
            soft = teacher(images).float()
        self.calls += 1
        return SyntheticSet(images, targets, soft_labels=soft, meta={"source": f"teacher_inversion/{self.mode}"})

    def loss(self, x: torch.Tensor, targets: torch.Tensor, teacher: nn.Module, student: nn.Module | None) -> torch.Tensor:
        with bn_statistics(teacher) as stats:
            logits = teacher(x).float()
        per_sample = self.oh * F.cross_entropy(logits, targets, reduction="none")
        if student is not None:
            with read_only(student):
                per_sample = per_sample + self.adv * adversarial(student(x), logits)
        if self.weighting is not None:
            phi = self.weighting.phi(logits.detach())
            per_sample = per_sample * phi / phi.mean().clamp_min(1e-12)
        return self.bn * stats.loss + per_sample.mean()

    def state_dict(self) -> dict:
        state = {**super().state_dict(), "calls": self.calls}
        if self.net is not None:
            state.update(net=self.net.state_dict(), optimizer=self.optimizer.state_dict())
        elif self.pending is not None:
            state.update(net=self.pending["net"], optimizer=self.pending["optimizer"])
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.calls = state.get("calls", 0)
        if "net" in state:
            self.pending = {"net": state["net"], "optimizer": state["optimizer"]}
