"""What every generator that optimises a synthetic set step by step shares (distribution matching,
trajectory matching): the loop with its progress bar, the logging / grid / checkpoint intervals,
the divergence check, and the run-folder :class:`~distillkit.checkpoint.Checkpoint` — resumed only
under the same settings.

A run subclasses :class:`IterativeRun` and provides ``step``, ``report``, ``synthetic_set``,
``checkpoint_state`` and ``load_checkpoint_state``; its generator provides ``iterations``, the
intervals, ``resume`` and ``settings(ctx)``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from distillkit.checkpoint import Checkpoint
from distillkit.data.synthetic import SyntheticSet
from distillkit.errors import DivergedError, UserError
from distillkit.plots import save_grid
from distillkit.progress import progress

log = logging.getLogger("distillkit")


class IterativeRun:
    """The shared part of one optimisation's state: position, divergence reference, checkpoint file.

    A subclass names its log and metric prefix (``dm``), its name in messages, its checkpoint file
    and format, and its grid folder.
    """

    prefix: str
    title: str
    checkpoint_name: str
    grid_folder: str

    def __init__(self, generator, ctx):
        self.gen, self.ctx, self.device = generator, ctx, ctx.device
        self.iteration = 0
        self.reference_loss: float | None = None
        path = Path(ctx.run_dir) / self.checkpoint_name if ctx.run_dir is not None else None
        self.checkpoint = Checkpoint(path, self.prefix, generator.settings(ctx), generator.resume, "generator.resume")

    # ---- what a run provides ------------------------------------------------------------------
    def step(self) -> None:
        raise NotImplementedError

    def report(self) -> str:
        """Read the logging window (the only host sync), check for divergence, log; the progress text."""
        raise NotImplementedError

    def synthetic_set(self) -> SyntheticSet:
        raise NotImplementedError

    def checkpoint_state(self) -> dict:
        """The run's own tensors and RNG state, on the CPU."""
        raise NotImplementedError

    def load_checkpoint_state(self, state: dict) -> None:
        raise NotImplementedError

    # ---- the loop -----------------------------------------------------------------------------
    def run_to(self, iterations: int, description: str) -> None:
        gen = self.gen
        bar = progress(range(self.iteration, iterations), desc=description, total=iterations - self.iteration)
        for _ in bar:
            self.step()
            done, last = self.iteration, self.iteration == iterations
            log_now, grid_now = last or done % gen.log_every == 0, last or done % gen.grid_every == 0
            checkpoint_now = last or done % gen.checkpoint_every == 0
            if log_now or grid_now or checkpoint_now:
                bar.set_postfix_str(self.report())  # before the checkpoint: a checkpoint is always a good state
            if grid_now:
                self.save_grid()
            if checkpoint_now:
                self.save_checkpoint()

    def check_divergence(self, logged: dict[str, float], matching: float, remedy: str) -> None:
        """Stop when a logged value is NaN or infinite, or when ``matching`` (the part of the loss that
        must stay bounded) exceeds ``explode_factor`` × its first logged value. The message names the
        last good checkpoint (checkpoints are written after this check) and ``remedy``."""
        if self.checkpoint.last_saved is not None:
            where = (f"last good checkpoint: {self.checkpoint.last_saved} ({remedy} and continue from it with "
                     "generator.resume=true)")
        else:
            where = (f"no checkpoint was written yet (generator.checkpoint_every={self.gen.checkpoint_every}); "
                     f"{remedy} and start over")
        if not all(math.isfinite(v) for v in logged.values()):
            shown = ", ".join(f"{name} {value}" for name, value in logged.items())
            raise DivergedError(f"{self.title} diverged by iteration {self.iteration}: {shown}; {where}")
        if self.reference_loss is None:
            self.reference_loss = matching
        elif self.reference_loss > 0 and matching > self.gen.explode_factor * self.reference_loss:
            raise DivergedError(f"{self.title} exploded by iteration {self.iteration}: matching loss {matching:.4g} "
                                f"is over {self.gen.explode_factor:g} × its first logged value "
                                f"{self.reference_loss:.4g}; {where}")

    # ---- files ---------------------------------------------------------------------------------
    def save_grid(self) -> None:
        if self.ctx.run_dir is None:
            return
        path = save_grid(self.synthetic_set(), self.ctx.data,
                         Path(self.ctx.run_dir) / self.grid_folder / f"iteration_{self.iteration:06d}.png")
        self.ctx.tracker.log_image(f"{self.prefix}/grid", path, step=self.iteration)

    def save_checkpoint(self) -> None:
        self.checkpoint.save(self.iteration, {"reference_loss": self.reference_loss, **self.checkpoint_state()})

    def resume(self) -> bool:
        """Continue from the run directory's checkpoint when ``generator.resume`` says so; False: start fresh."""
        resumed = self.checkpoint.load()
        if resumed is None:
            return False
        iteration, state = resumed
        path = self.checkpoint.path
        for name, tensor in self.checkpoint_state().items():
            saved = state.get(name)
            if isinstance(tensor, torch.Tensor) and isinstance(saved, torch.Tensor) and saved.shape != tensor.shape:
                raise UserError(f"{path} holds {name} of shape {tuple(saved.shape)}, this run needs "
                                f"{tuple(tensor.shape)}")
        if iteration > self.gen.iterations:
            raise UserError(f"{path} is at iteration {iteration}, past generator.iterations={self.gen.iterations}")
        self.load_checkpoint_state(state)
        self.iteration, self.reference_loss = iteration, state["reference_loss"]
        log.info("%s: resumed from %s at iteration %d", self.prefix, path, self.iteration)
        return True
