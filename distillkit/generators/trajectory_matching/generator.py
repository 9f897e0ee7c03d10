"""The generator (:class:`TrajectoryMatching`) and the state of one distillation (:class:`MatchingRun`)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import Field

from distillkit.checkpoint import resume_mode
from distillkit.config import model_config
from distillkit.data.synthetic import SyntheticSet
from distillkit.errors import UserError
from distillkit.generators.iterative import IterativeRun
from distillkit.generators.trajectory_matching.objective import matching_loss
from distillkit.generators.trajectory_matching.optimiser import MaskedSGD
from distillkit.generators.trajectory_matching.student import StepPlan, Student
from distillkit.generators.trajectory_matching.unroll import unroll_checkpointed, unroll_full
from distillkit.models import ModelSpec
from distillkit.roles.experts import Trajectory
from distillkit.stages import Generator
from distillkit.training import bf16_applies, predict
from distillkit.validation import (ConfigError, Float, Int, NonNegativeFloat, NonNegativeInt, PositiveFloat,
                                   PositiveInt, Resume, plain, validated)

log = logging.getLogger("distillkit")

SELECTIONS = ("none", "depth", "loss")
INITS = ("real", "noise", "correct")
MEMORY_MODES = ("full", "checkpoint")
CHECKPOINT_NAME = "tm_checkpoint.pt"
GRID_FOLDER = "tm_grids"


# ---------------------------------------------------------------------------------------------
# The generator
# ---------------------------------------------------------------------------------------------

@dataclass
class StartWindow:
    """DATM's growing start-epoch window: the upper bound grows from ``initial`` to ``max_start_epoch``."""

    initial: NonNegativeInt | None = None  # None: a fixed window (MTT)
    grow_until: NonNegativeInt = 0


class TrajectoryMatching(Generator):
    """``TrajectoryMatching(...)(ctx)`` returns the distilled set with its learned lr (and soft labels),
    matched to the ``experts`` role's trajectories. Options mirror ``conf/generator/trajectory_matching.yaml``."""

    roles = ("experts",)

    @validated
    def __init__(self, model: ModelSpec = "convnet", iterations: PositiveInt = 5000, syn_steps: PositiveInt = 20,
                 expert_epochs: PositiveInt = 2, min_start_epoch: NonNegativeInt = 0,
                 max_start_epoch: PositiveInt = 20, start_window: StartWindow = StartWindow(),
                 batch_syn: PositiveInt | None = None, lr_img: PositiveFloat = 1000.0,
                 img_momentum: NonNegativeFloat = 0.5, lr_teacher: PositiveFloat = 0.01, lr_lr: NonNegativeFloat = 1e-5,
                 lr_momentum: NonNegativeFloat = 0.5, init: Literal[INITS] = "real", soft_labels: bool = False,
                 label_epoch: Int = -1, lr_labels: NonNegativeFloat = 2.0, label_momentum: NonNegativeFloat = 0.9,
                 loss_threshold: NonNegativeFloat | None = None, parameter_selection: Literal[SELECTIONS] = "none",
                 selection_ratio: Annotated[Float, Field(ge=0, lt=1)] = 0.0, memory: Literal[MEMORY_MODES] = "full",
                 dsa_strategy: str | None = "color_crop_cutout_flip_scale_rotate", amp: bool = True,
                 log_every: PositiveInt = 50, grid_every: PositiveInt = 500, checkpoint_every: PositiveInt = 250,
                 resume: Resume = "auto", explode_factor: PositiveFloat = 100.0):
        self.model = plain(model)
        self.iterations, self.syn_steps, self.expert_epochs = iterations, syn_steps, expert_epochs
        self.min_start_epoch, self.max_start_epoch = min_start_epoch, max_start_epoch
        if not min_start_epoch < max_start_epoch:
            raise ConfigError("max_start_epoch", f"must be above min_start_epoch={min_start_epoch} (got {max_start_epoch})")
        self.window_initial, self.window_grow_until = start_window.initial, start_window.grow_until
        if self.window_initial is not None and (not min_start_epoch < self.window_initial <= max_start_epoch
                                                or self.window_grow_until < 1):
            raise ConfigError("start_window", "needs min_start_epoch < initial <= max_start_epoch and grow_until >= 1 "
                              f"(got initial={self.window_initial}, grow_until={self.window_grow_until})")
        self.batch_syn = batch_syn
        self.lr_img, self.img_momentum = lr_img, img_momentum
        self.lr_teacher, self.lr_lr, self.lr_momentum = lr_teacher, lr_lr, lr_momentum
        self.init, self.soft_labels, self.label_epoch = init, soft_labels, label_epoch
        self.lr_labels, self.label_momentum = lr_labels, label_momentum
        self.loss_threshold = math.inf if loss_threshold is None else loss_threshold
        self.parameter_selection, self.selection_ratio = parameter_selection, selection_ratio
        self.memory = memory
        self.dsa_strategy = dsa_strategy if dsa_strategy and dsa_strategy != "none" else None
        self.amp = amp
        self.log_every, self.grid_every, self.checkpoint_every = log_every, grid_every, checkpoint_every
        self.resume, self.explode_factor = resume_mode(resume), explode_factor

    def check(self, ctx) -> None:
        """The experts must be long enough for the latest start epoch plus the matched span."""
        experts = ctx.roles.role("experts")
        needed = self.max_start_epoch - 1 + self.expert_epochs
        if needed > experts.epochs:
            raise ConfigError("generator.max_start_epoch", f"{self.max_start_epoch} with expert_epochs="
                              f"{self.expert_epochs} needs experts trained at least {needed} epochs "
                              f"(roles.experts.epochs={experts.epochs})")

    def start_epoch_bound(self, iteration: int) -> int:
        """The exclusive upper bound of the start epoch at ``iteration`` (DATM's growing window)."""
        if self.window_initial is None:
            return self.max_start_epoch
        grown = int((self.max_start_epoch - self.window_initial) * iteration / self.window_grow_until)
        return min(self.window_initial + grown, self.max_start_epoch)

    def settings(self, ctx) -> dict:
        """Everything that changes the images; a checkpoint resumes only under the same settings.
        Left out: ``iterations`` (a run may be extended), the intervals, and ``memory`` (same gradients,
        up to bf16 rounding)."""
        model = plain(model_config(self.model))
        role = ctx.roles.role("experts")
        experts = {k: v for k, v in role.expert_spec(ctx, 0).items() if k != "index"}
        return {"dataset": ctx.dataset_identity, "ipc": ctx.ipc, "seed": ctx.seed, "model": model,
                "experts": {**experts, "num_experts": role.num_experts}, "syn_steps": self.syn_steps,
                "expert_epochs": self.expert_epochs, "start_epochs": [self.min_start_epoch, self.max_start_epoch],
                "start_window": [self.window_initial, self.window_grow_until], "batch_syn": self.batch_syn,
                "lr_img": self.lr_img, "img_momentum": self.img_momentum, "lr_teacher": self.lr_teacher,
                "lr_lr": self.lr_lr, "lr_momentum": self.lr_momentum, "init": self.init,
                "soft_labels": self.soft_labels, "label_epoch": self.label_epoch, "lr_labels": self.lr_labels,
                "label_momentum": self.label_momentum, "loss_threshold": self.loss_threshold,
                "parameter_selection": [self.parameter_selection, self.selection_ratio],
                "dsa_strategy": self.dsa_strategy, "amp": bf16_applies(ctx.device, self.amp, on_cpu=True)}

    def start(self, ctx, trajectories: list[Trajectory]) -> "MatchingRun":
        return MatchingRun(self, ctx, trajectories)

    def __call__(self, ctx) -> SyntheticSet:
        run = self.start(ctx, ctx.role("experts"))
        run.run_to(self.iterations)
        return run.synthetic_set()


class MatchingRun(IterativeRun):
    """The state of one distillation: pixels, lr, labels, optimiser, RNG, position, log window."""

    prefix, title = "tm", "trajectory matching"
    checkpoint_name, grid_folder = CHECKPOINT_NAME, GRID_FOLDER

    def __init__(self, generator: TrajectoryMatching, ctx, trajectories: list[Trajectory]):
        super().__init__(generator, ctx)
        self.trajectories = trajectories
        self.num_classes, self.ipc = ctx.data.num_classes, ctx.ipc
        network = ctx.build_model(generator.model)
        network.train()  # as the references: a batch-norm student normalises with batch statistics
        self.student = Student(network, generator.dsa_strategy, generator.amp, self.device)
        if trajectories[0].num_parameters != self.student.layout.total:
            raise UserError(f"the expert trajectories have {trajectories[0].num_parameters} parameters, model "
                            f"'{generator.model}' has {self.student.layout.total}; train experts of the same model")
        self.hard_labels = torch.arange(self.num_classes, device=self.device).repeat_interleave(self.ipc)
        self.images = torch.zeros(len(self.hard_labels), *ctx.data.train_images.shape[1:], device=self.device,
                                  requires_grad=True)
        self.syn_lr = torch.tensor(generator.lr_teacher, device=self.device, requires_grad=True)
        self.label_logits = (torch.zeros(len(self.hard_labels), self.num_classes, device=self.device,
                                         requires_grad=True) if generator.soft_labels else None)
        groups = [(self.images, generator.lr_img, generator.img_momentum),
                  (self.syn_lr, generator.lr_lr, generator.lr_momentum)]
        if self.label_logits is not None:
            groups.append((self.label_logits, generator.lr_labels, generator.label_momentum))
        self.optimizer = MaskedSGD(groups)
        self.leaves = [p for p, _, _ in groups]
        self.batch_syn = min(generator.batch_syn or len(self.hard_labels), len(self.hard_labels))
        self.rng = torch.Generator().manual_seed(ctx.seed)
        self.window = torch.zeros(2, device=self.device)  # loss sum, accepted iterations
        self.window_steps = 0
        if not self.resume():
            self._initialise()

    # ---- set-up ------------------------------------------------------------------------------
    def expert_network(self, trajectory: Trajectory, epoch: int) -> torch.nn.Module:
        network = self.ctx.build_model(self.gen.model)
        torch.nn.utils.vector_to_parameters(trajectory.parameters_at(epoch, self.device), network.parameters())
        return network

    def _initialise(self) -> None:
        gen, ctx = self.gen, self.ctx
        real_images, real_labels = ctx.train_images, ctx.train_labels
        chosen = []
        correct = None
        if gen.init == "correct":  # DATM: images the first expert classifies correctly at label_epoch
            first = self.expert_network(self.trajectories[0], gen.label_epoch)
            correct = predict(first, real_images).argmax(1) == real_labels
        for c in range(self.num_classes):
            members = torch.nonzero(real_labels == c).flatten()
            if gen.init != "noise" and len(members) < self.ipc:
                raise UserError(f"init={gen.init} needs ipc={self.ipc} real images in every class; class {c} has "
                                f"{len(members)} (use generator.init=noise or a lower ipc)")
            members = members[torch.randperm(len(members), generator=self.rng).to(members.device)]
            if correct is not None:
                right, wrong = members[correct[members]], members[~correct[members]]
                if len(right) < self.ipc:
                    log.warning("tm: class %d has %d correctly classified images, fewer than ipc=%d; the rest are "
                                "misclassified ones", c, len(right), self.ipc)
                members = torch.cat([right, wrong])
            chosen.append(members[:self.ipc])
        with torch.no_grad():
            if gen.init == "noise":
                self.images.copy_(torch.randn(self.images.shape, generator=self.rng))
            else:
                self.images.copy_(real_images[torch.cat(chosen)])
            if self.label_logits is not None:
                self.label_logits.copy_(self.expert_logits(self.images))

    @torch.no_grad()
    def expert_logits(self, images: torch.Tensor) -> torch.Tensor:
        """DATM's soft-label init: per image, the mean logits at ``label_epoch`` over the experts that
        classify it correctly (over all experts for an image none gets right)."""
        summed = torch.zeros(len(images), self.num_classes, device=self.device)
        everyone = torch.zeros_like(summed)
        counts = torch.zeros(len(images), 1, device=self.device)
        for trajectory in self.trajectories:
            logits = predict(self.expert_network(trajectory, self.gen.label_epoch), images)
            right = (logits.argmax(1) == self.hard_labels).unsqueeze(1).float()
            summed += logits * right
            counts += right
            everyone += logits
        return torch.where(counts > 0, summed / counts.clamp(min=1), everyone / len(self.trajectories))

    def checkpoint_state(self) -> dict:
        state = {"images": self.images.detach().cpu(), "syn_lr": self.syn_lr.detach().cpu(),
                 "optimizer": self.optimizer.state_dict(), "rng": self.rng.get_state()}
        if self.label_logits is not None:
            state["label_logits"] = self.label_logits.detach().cpu()
        return state

    def load_checkpoint_state(self, state: dict) -> None:
        with torch.no_grad():
            self.images.copy_(state["images"])
            self.syn_lr.copy_(state["syn_lr"])
            if self.label_logits is not None:
                self.label_logits.copy_(state["label_logits"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.set_state(state["rng"])

    # ---- the iteration -----------------------------------------------------------------------
    def draw(self) -> tuple[Trajectory, int, list[StepPlan]]:
        """The iteration's expert, start epoch and step plans, all from the run's own CPU generator."""
        expert = self.trajectories[int(torch.randint(len(self.trajectories), (), generator=self.rng))]
        bound = self.gen.start_epoch_bound(self.iteration)
        start_epoch = int(torch.randint(self.gen.min_start_epoch, bound, (), generator=self.rng))
        n = len(self.hard_labels)
        # MTT: a fresh permutation split into batch_syn chunks, a new one when it runs out
        chunks: list[torch.Tensor] = []
        while len(chunks) < self.gen.syn_steps:
            chunks += list(torch.randperm(n, generator=self.rng).split(self.batch_syn))
        chunks = chunks[:self.gen.syn_steps]
        seeds = torch.randint(2**62, (self.gen.syn_steps,), generator=self.rng).tolist()
        # one host-to-device copy for the whole iteration
        device_chunks = torch.cat(chunks).to(self.device).split([len(c) for c in chunks])
        return expert, start_epoch, [StepPlan(idx, seed) for idx, seed in zip(device_chunks, seeds)]

    def step_fn(self, theta, plan: StepPlan, create_graph: bool) -> torch.Tensor:
        labels = self.label_logits if self.label_logits is not None else self.hard_labels
        return self.student.step(theta, plan, self.images, labels, self.syn_lr, create_graph)

    def matching_gradients(self, expert: Trajectory, start_epoch: int, plans: list[StepPlan]) -> torch.Tensor:
        """The matching loss of one (expert, start, plans) draw; its gradients land in the leaves' ``.grad``."""
        start = expert.parameters_at(start_epoch, self.device)
        target = expert.parameters_at(start_epoch + self.gen.expert_epochs, self.device)

        def loss_fn(final):
            return matching_loss(final, start, target, self.gen.parameter_selection, self.gen.selection_ratio)

        unroll = unroll_checkpointed if self.gen.memory == "checkpoint" else unroll_full
        return unroll(self.step_fn, start, plans, loss_fn, self.leaves)

    def step(self) -> None:
        expert, start_epoch, plans = self.draw()
        self.optimizer.zero_grad()
        loss = self.matching_gradients(expert, start_epoch, plans)
        accept = loss <= self.gen.loss_threshold  # DATM: no update from a draw it cannot match
        self.optimizer.step(accept)
        with torch.no_grad():  # SGD on α can cross 0 (seen on digits without augmentation): a student stepping uphill
            self.syn_lr.clamp_(min=0.0)
        self.window += torch.stack([loss, accept.float()])
        self.iteration += 1
        self.window_steps += 1

    # ---- the loop, logging, grids, checkpoints ------------------------------------------------
    def run_to(self, iterations: int) -> None:
        super().run_to(iterations, description=f"tm ({self.ctx.cfg.method.name})")

    def report(self) -> str:
        """Read the window's means (the only host sync), check for divergence, log them."""
        steps = max(1, self.window_steps)
        values = torch.cat([self.window / steps, self.syn_lr.detach().reshape(1),
                            self.images.detach().abs().amax().reshape(1)]).tolist()
        self.window.zero_()
        self.window_steps = 0
        loss, accepted, syn_lr, max_pixel = values
        self.check_divergence({"loss": loss, "lr": syn_lr, "largest |pixel|": max_pixel}, loss,
                              remedy="lower generator.lr_img or generator.lr_lr")
        metrics = {"tm/loss": loss, "tm/accepted": accepted, "tm/syn_lr": syn_lr, "tm/max_abs_pixel": max_pixel,
                   "tm/start_epoch_bound": self.gen.start_epoch_bound(self.iteration)}
        self.ctx.tracker.log_metrics(metrics, step=self.iteration)
        text = f"loss {loss:.4g}, lr {syn_lr:.4g}, accepted {accepted:.0%}"
        log.info("tm iteration %d/%d: %s", self.iteration, self.gen.iterations, text)
        return text

    def synthetic_set(self) -> SyntheticSet:
        """The set as it is now (detached, on the CPU): images, labels, learned lr, soft labels (logits)."""
        soft = self.label_logits.detach().cpu().clone() if self.label_logits is not None else None
        return SyntheticSet(self.images.detach().cpu().clone(), self.hard_labels.cpu(), soft_labels=soft,
                            lr=self.syn_lr.detach().cpu().clone(), meta={"source": "trajectory_matching"})
