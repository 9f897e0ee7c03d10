"""The ``rounds`` schedule: generation, a replay buffer and a learner, interleaved (SSD-KD's shape).

Each round: the generator makes a batch; the scorer scores it (or not); the buffer takes it in
(fixed size: the oldest, lowest-scored, or — ``balanced`` — per class the lowest-scored entries make
room; or no limit at all); then ``steps_per_round`` times the sampler draws a batch from the buffer
(with per-sample weights when the sampler gives them: :meth:`~distillkit.stages.Sampler.weights`) and
the learner trains on it, its per-sample feedback becoming those samples' new scores. After the last
round the buffer is the distilled set and the evaluator assesses the learner's network.

Every ``checkpoint_every`` rounds the whole state — every stage's state (a generator's RNG…), the
buffer, the learner's network and optimiser, the global RNG — goes to ``run_dir/rounds_checkpoint.pt``;
the same command continues from it and ends exactly where an uninterrupted run ends.

results.json's ``rounds_seconds`` splits the time in rounds into synthesis (generator, scorer, buffer) and
learning (sampler and learner). With ``curve_every`` the learner's accuracy on the held-out tenth of the
training data (``ctx.split``; never the sealed test set) is taken every that many rounds, beside the seconds
spent in rounds so far (not counting these evaluations or the checkpoints): results.json's ``curve``, from
which a method's time to an accuracy is read (SSD-KD's "as accurate, sooner").
"""

from __future__ import annotations

import dataclasses
import logging
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Literal

import torch
from pydantic import Field

from distillkit.checkpoint import Checkpoint, resume_mode
from distillkit.errors import DivergedError
from distillkit.progress import progress
from distillkit.schedules import Artefacts, Outcome, Schedule, Stages, prepare_roles
from distillkit.schedules.buffer import ReplayBuffer
from distillkit.stages import Scores
from distillkit.training import accuracy
from distillkit.validation import ConfigError, Float, PositiveInt, Resume, plain, validated

log = logging.getLogger("distillkit")

CHECKPOINT_NAME = "rounds_checkpoint.pt"


class Rounds(Schedule):
    """Options mirror ``conf/schedule/rounds.yaml``."""

    trains_the_measured_network = True  # the evaluator tests the learner's one network

    @validated
    def __init__(self, rounds: PositiveInt = 10, steps_per_round: PositiveInt = 10,
                 buffer_size: PositiveInt | Literal["ipc", "unbounded"] = 1000,
                 replace: Literal["oldest", "lowest", "balanced"] = "oldest",
                 admit: Annotated[Float, Field(gt=0, le=1)] = 1.0, new_score: Literal["scorer", "max"] = "scorer",
                 checkpoint_every: PositiveInt = 1, resume: Resume = "auto", curve_every: PositiveInt | None = None):
        if replace == "balanced" and buffer_size == "unbounded":
            raise ConfigError("replace", "a balanced buffer needs a size (buffer_size: a number or ipc)")
        if admit < 1 and replace != "balanced":
            raise ConfigError("admit", "only a balanced buffer admits part of a batch (replace: balanced)")
        self.rounds, self.steps_per_round, self.buffer_size = rounds, steps_per_round, buffer_size
        self.replace, self.admit, self.new_score = replace, admit, new_score
        self.checkpoint_every, self.resume = checkpoint_every, resume_mode(resume)
        self.curve_every = curve_every

    def capacity(self, ctx) -> int | None:
        """The buffer's size: a number, ipc × classes, or None (unbounded)."""
        if self.buffer_size == "unbounded":
            return None
        return ctx.ipc * ctx.data.num_classes if self.buffer_size == "ipc" else self.buffer_size

    def buffer(self, ctx) -> ReplayBuffer:
        return ReplayBuffer(self.capacity(ctx), self.replace, ctx.data.num_classes, self.admit, self.new_score)

    def check(self, stages: Stages, roles) -> None:
        if stages.learner is None:
            raise ConfigError("learner", "the rounds schedule trains a learner: pick one (learner=classifier)")
        if not stages.evaluator.assesses_networks:
            raise ConfigError("evaluator", f"{type(stages.evaluator).__name__} measures a distilled set, not the "
                              "learner the rounds schedule trains: pick one that tests networks (evaluator=classifier)")

    def settings(self, ctx) -> dict:
        """What a checkpoint must share with the run that continues it (``rounds`` may be extended)."""
        return {"config": {k: plain(ctx.cfg[k]) for k in ("dataset", "generator", "scorer", "sampler", "learner")
                           if k in ctx.cfg},
                "ipc": ctx.ipc, "seed": ctx.seed, "buffer_size": self.capacity(ctx), "replace": self.replace,
                "admit": self.admit, "new_score": self.new_score, "steps_per_round": self.steps_per_round}

    def run(self, stages: Stages, ctx, artefacts: Artefacts) -> Outcome:
        prepare_roles(stages, ctx, artefacts)
        learner = stages.learner
        learner.start(ctx)
        buffer = self.buffer(ctx)
        path = Path(ctx.run_dir) / CHECKPOINT_NAME if ctx.run_dir is not None else None
        checkpoint = Checkpoint(path, "rounds", self.settings(ctx), self.resume, "schedule.resume")
        with artefacts.timed("rounds"):  # a resumed run's earlier rounds count too: restore inside the clock
            start, clock, curve = self.restore(checkpoint, stages, buffer, ctx)
            for done in progress(range(start, self.rounds), desc="rounds", total=self.rounds - start):
                self.round(stages, buffer, ctx, clock)
                if self.curve_every is not None and ((done + 1) % self.curve_every == 0 or done + 1 == self.rounds):
                    curve.point(done + 1, clock.total, learner.model, buffer, ctx)
                if (done + 1) % self.checkpoint_every == 0 or done + 1 == self.rounds:
                    if not torch.isfinite(buffer.scores).all():  # the only host sync of the loop
                        where = (f"last good checkpoint: {checkpoint.last_saved}" if checkpoint.last_saved is not None
                                 else "no checkpoint was written yet")
                        raise DivergedError(f"rounds: the learner's losses became NaN or infinite by round {done + 1} "
                                            f"(lower learner.lr; {where})")
                    checkpoint.save(done + 1, self.state(stages, buffer, clock, curve))
        # every batch offered to the buffer, before an interruption too (the buffer's count is checkpointed)
        artefacts.images_generated += buffer.offered if stages.generator.makes_images else 0
        distilled = buffer.set.to("cpu")
        artefacts.save_set(distilled)
        with artefacts.timed("evaluator"):
            report = stages.evaluator.assess([learner.model], ctx)
        report.details["buffer"] = {"size": len(buffer), "capacity": buffer.size, "peak": buffer.peak,
                                    "samples_generated": buffer.offered, "samples_admitted": buffer.added}
        report.details["rounds_seconds"] = clock.state_dict()
        if self.curve_every is not None:
            report.details["curve"] = curve.points
        return Outcome("evaluated", distilled, report)

    def round(self, stages: Stages, buffer: ReplayBuffer, ctx, clock: RoundsClock) -> None:
        with clock.phase("synthesis", ctx.device):
            batch = stages.generator(ctx)
            scores = stages.scorer(batch, ctx)
            buffer.add(batch, None if scores is None else scores.pool)
        with clock.phase("learning", ctx.device):
            for _ in range(self.steps_per_round):
                scores = Scores(buffer.scores)
                indices = stages.sampler(buffer.set, scores, ctx)
                weights = stages.sampler.weights(buffer.set, scores, indices, ctx)
                batch = dataclasses.replace(buffer.set.subset(indices), weights=weights)
                buffer.update(indices, stages.learner.step(batch, ctx))

    @staticmethod
    def state(stages: Stages, buffer: ReplayBuffer, clock: RoundsClock, curve: LearningCurve) -> dict:
        return {"stages": {name: stage.state_dict() for name, stage in stages.named().items()},
                "buffer": buffer.state_dict(), "rng": torch.get_rng_state(), "clock": clock.state_dict(),
                "curve": curve.points}

    @staticmethod
    def restore(checkpoint: Checkpoint, stages: Stages, buffer: ReplayBuffer,
                ctx) -> tuple[int, RoundsClock, LearningCurve]:
        """The first round to run (0, or the one after the checkpoint's, whose state is restored), the clock
        and the curve so far."""
        resumed = checkpoint.load()
        if resumed is None:
            return 0, RoundsClock(), LearningCurve()
        done, state = resumed
        for name, stage in stages.named().items():
            stage.load_state_dict(state["stages"][name])
        buffer.load_state_dict(state["buffer"], ctx.device)
        torch.set_rng_state(state["rng"])
        log.info("rounds: resumed from %s after round %d", checkpoint.path, done)
        return done, RoundsClock(**state.get("clock", {})), LearningCurve(state.get("curve"))


class RoundsClock:
    """Seconds spent in the two halves of the rounds so far — ``synthesis`` (generator, scorer, buffer) and
    ``learning`` (sampler and learner steps) — without checkpoints or curve points; on a GPU each half ends
    when its queued work has run (one synchronisation per half, never inside one). Resumable."""

    def __init__(self, synthesis: float = 0.0, learning: float = 0.0):
        self.seconds = {"synthesis": synthesis, "learning": learning}

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    @contextmanager
    def phase(self, name: str, device: torch.device):
        started = time.perf_counter()
        yield
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.seconds[name] += time.perf_counter() - started

    def state_dict(self) -> dict:
        return {name: round(seconds, 3) for name, seconds in self.seconds.items()}


class LearningCurve:
    """The learner's held-out accuracy against the seconds spent in rounds (``curve_every``)."""

    def __init__(self, points: list[dict] | None = None):
        self.points = list(points or [])

    def point(self, rounds: int, seconds: float, model: torch.nn.Module, buffer: ReplayBuffer, ctx) -> None:
        held_out = accuracy(model, ctx.split.held_out_images, ctx.split.held_out_labels)
        self.points.append({"round": rounds, "seconds": round(seconds, 3), "images_generated": buffer.offered,
                            "held_out_accuracy": held_out})
        log.info("rounds: round %d, %.0f s, held-out accuracy %.2f %%", rounds, seconds, held_out)
