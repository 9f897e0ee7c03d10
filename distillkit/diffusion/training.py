"""DDPM noise-prediction training of a class-conditional denoiser, resumable, with extra losses and
milestones.

An *extra loss* is an ``nn.Module`` whose ``forward(batch: DenoisingBatch)`` returns a scalar and
whose ``weight`` scales it; its parameters (e.g. a projector head) train with the denoiser and its
state is checkpointed with it. D2C's feature-alignment loss is one.

A *milestone* is a step at which a caller looks at the model half-way (the generative evaluator samples
at several training lengths in one run): ``at_milestone(step)`` runs with the EMA weights in place and
the model in eval mode, then training continues as if nothing happened, from a checkpoint written at
that step.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch
import torch.nn.functional as F

from distillkit.checkpoint import Checkpoint
from distillkit.diffusion.denoisers import noise_schedule
from distillkit.errors import DivergedError
from distillkit.io import write_json
from distillkit.progress import progress
from distillkit.training import autocast
from distillkit.validation import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, UnitInterval

log = logging.getLogger("distillkit")

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class DenoiserTraining:
    """How :func:`train_denoiser` trains, all but how long (``train:`` of the diffusion role, which adds
    ``steps``, and of the generative evaluator, whose ``eval_at_steps`` say how long)."""

    batch_size: PositiveInt = 64
    lr: PositiveFloat = 5e-4
    weight_decay: NonNegativeFloat = 0.0
    warmup_steps: NonNegativeInt = 100
    grad_clip: PositiveFloat = 1.0
    ema_decay: UnitInterval = 0.999
    label_dropout: UnitInterval = 0.1
    timesteps: PositiveInt = 1000
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    checkpoint_every: PositiveInt = 250


@dataclass
class DenoisingBatch:
    """What one training step saw and predicted: what an extra loss may read."""

    model: torch.nn.Module
    clean: torch.Tensor        # x_0, pixels in [-1, 1]
    noisy: torch.Tensor        # x_t
    timesteps: torch.Tensor
    labels: torch.Tensor       # the conditioning after label dropout (null class = dropped)
    noise: torch.Tensor        # ε
    prediction: torch.Tensor   # ε_θ(x_t, t, c)
    indices: torch.Tensor      # which training images these are (rows of the ``pixels`` handed to training)


def train_denoiser(model, pixels: torch.Tensor, labels: torch.Tensor, null_class: int, train_cfg: dict,
                   folder: Path, seed: int, amp: bool, extra_losses: Sequence[torch.nn.Module] = (),
                   milestones: Sequence[int] = (), at_milestone: Callable[[int], None] | None = None) -> None:
    """Train ``model`` to predict the noise, resumable from ``folder/checkpoint.pt``; writes ``folder/unet``
    (EMA weights when ``ema_decay`` is set) and ``folder/training.json``.

    Loss: ``‖ε − ε_θ‖²`` plus ``weight × loss(batch)`` of every extra loss. At each step in ``milestones``
    ``at_milestone(step)`` is called (module docstring) before that step's checkpoint is written, so an
    interruption inside it repeats it on resume: it must skip what it already recorded.
    """
    from diffusers.training_utils import EMAModel

    device = pixels.device
    steps, batch, every = int(train_cfg["steps"]), int(train_cfg["batch_size"]), int(train_cfg["checkpoint_every"])
    scheduler = noise_schedule(train_cfg)
    extra_parameters = [p for loss in extra_losses for p in loss.parameters()]
    optimizer = torch.optim.AdamW([*model.parameters(), *extra_parameters], lr=float(train_cfg["lr"]),
                                  weight_decay=float(train_cfg["weight_decay"]))
    warmup = max(1, int(train_cfg["warmup_steps"]))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    ema = EMAModel(model.parameters(), decay=float(train_cfg["ema_decay"])) if train_cfg["ema_decay"] else None
    generator = torch.Generator(device).manual_seed(seed)
    checkpoint = Checkpoint(folder / CHECKPOINT_FILE, "diffusion-training", settings={})
    start, history = 0, []
    resumed = checkpoint.load()
    if resumed is not None:
        start, state = resumed
        model.load_state_dict(state["unet"])
        for loss, saved in zip(extra_losses, state["extra_losses"]):
            loss.load_state_dict(saved)
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
            ema.to(device)
        generator.set_state(state["rng"])
        history = list(state["history"])
        log.info("resuming diffusion training at step %d/%d from %s", start, steps, checkpoint.path)
    model.train()
    running, logged_at = torch.zeros((), device=device), start
    for step in progress(range(start, steps), desc="diffusion", total=steps - start):
        idx = torch.randint(len(pixels), (min(batch, len(pixels)),), device=device, generator=generator)
        clean, cond = pixels[idx], labels[idx]
        dropped = torch.rand(len(idx), device=device, generator=generator) < float(train_cfg["label_dropout"])
        cond = torch.where(dropped, torch.full_like(cond, null_class), cond)
        noise = torch.randn(clean.shape, device=device, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), device=device, generator=generator)
        noisy = scheduler.add_noise(clean, noise, t)
        with autocast(device, amp, on_cpu=True):
            predicted = model(noisy, t, class_labels=cond).sample
            extra = [loss.weight * loss(DenoisingBatch(model, clean, noisy, t, cond, noise, predicted, idx))
                     for loss in extra_losses]
        loss = F.mse_loss(predicted.float(), noise) + sum(e.float() for e in extra)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*model.parameters(), *extra_parameters], float(train_cfg["grad_clip"]))
        optimizer.step()
        schedule.step()
        if ema is not None:
            ema.step(model.parameters())
        running += loss.detach()
        done = step + 1
        if done % every == 0 or done == steps or done in milestones:  # the only host sync: NaN check, checkpoint
            mean_loss = running.item() / (done - logged_at)
            running.zero_()
            logged_at = done
            if not math.isfinite(mean_loss):
                where = f"resume point: {checkpoint.path}" if checkpoint.last_saved else "no checkpoint yet"
                raise DivergedError(f"diffusion training: the loss became {mean_loss} by step {done} ({where}); "
                                    "lower roles.diffusion.train.lr")
            history.append({"step": done, "loss": mean_loss})
            if done in milestones and at_milestone is not None:
                look_at_milestone(model, ema, at_milestone, done)
            checkpoint.save(done, {
                "unet": model.state_dict(), "extra_losses": [loss.state_dict() for loss in extra_losses],
                "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                "ema": ema.state_dict() if ema is not None else {}, "rng": generator.get_state(), "history": history})
    if ema is not None:
        ema.copy_to(model.parameters())
    model.save_pretrained(folder / "unet")
    write_json(folder / "training.json", {"steps": steps, "loss": history})
    (folder / CHECKPOINT_FILE).unlink(missing_ok=True)


def look_at_milestone(model, ema, at_milestone: Callable[[int], None], step: int) -> None:
    """``at_milestone(step)`` with the EMA weights in place (what a finished training would keep), in eval mode;
    the training weights and mode come back after it."""
    if ema is not None:
        ema.store(model.parameters())
        ema.copy_to(model.parameters())
    model.eval()
    try:
        at_milestone(step)
    finally:
        if ema is not None:
            ema.restore(model.parameters())
        model.train()
