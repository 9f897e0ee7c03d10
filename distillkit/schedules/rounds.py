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
"""

from __future__ import annotations

import dataclasses
import logging
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
from distillkit.validation import ConfigError, Float, PositiveInt, Resume, plain, validated

log = logging.getLogger("distillkit")

CHECKPOINT_NAME = "rounds_checkpoint.pt"


class Rounds(Schedule):
    """Options mirror ``conf/schedule/rounds.yaml``."""

    @validated
    def __init__(self, rounds: PositiveInt = 10, steps_per_round: PositiveInt = 10,
                 buffer_size: PositiveInt | Literal["ipc", "unbounded"] = 1000,
                 replace: Literal["oldest", "lowest", "balanced"] = "oldest",
                 admit: Annotated[Float, Field(gt=0, le=1)] = 1.0, new_score: Literal["scorer", "max"] = "scorer",
                 checkpoint_every: PositiveInt = 1, resume: Resume = "auto"):
        if replace == "balanced" and buffer_size == "unbounded":
            raise ConfigError("replace", "a balanced buffer needs a size (buffer_size: a number or ipc)")
        if admit < 1 and replace != "balanced":
            raise ConfigError("admit", "only a balanced buffer admits part of a batch (replace: balanced)")
        self.rounds, self.steps_per_round, self.buffer_size = rounds, steps_per_round, buffer_size
        self.replace, self.admit, self.new_score = replace, admit, new_score
        self.checkpoint_every, self.resume = checkpoint_every, resume_mode(resume)

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
        start = self.restore(checkpoint, stages, buffer, ctx)
        with artefacts.timed("rounds"):
            for done in progress(range(start, self.rounds), desc="rounds", total=self.rounds - start):
                self.round(stages, buffer, ctx)
                if (done + 1) % self.checkpoint_every == 0 or done + 1 == self.rounds:
                    if not torch.isfinite(buffer.scores).all():  # the only host sync of the loop
                        where = (f"last good checkpoint: {checkpoint.last_saved}" if checkpoint.last_saved is not None
                                 else "no checkpoint was written yet")
                        raise DivergedError(f"rounds: the learner's losses became NaN or infinite by round {done + 1} "
                                            f"(lower learner.lr; {where})")
                    checkpoint.save(done + 1, self.state(stages, buffer))
        # every batch offered to the buffer, before an interruption too (the buffer's count is checkpointed)
        artefacts.images_generated += buffer.offered if stages.generator.makes_images else 0
        distilled = buffer.set.to("cpu")
        artefacts.save_set(distilled)
        with artefacts.timed("evaluator"):
            report = stages.evaluator.assess([learner.model], ctx)
        report.details["buffer"] = {"size": len(buffer), "capacity": buffer.size, "peak": buffer.peak,
                                    "samples_generated": buffer.offered, "samples_admitted": buffer.added}
        return Outcome("evaluated", distilled, report)

    def round(self, stages: Stages, buffer: ReplayBuffer, ctx) -> None:
        batch = stages.generator(ctx)
        scores = stages.scorer(batch, ctx)
        buffer.add(batch, None if scores is None else scores.pool)
        for _ in range(self.steps_per_round):
            scores = Scores(buffer.scores)
            indices = stages.sampler(buffer.set, scores, ctx)
            weights = stages.sampler.weights(buffer.set, scores, indices, ctx)
            batch = dataclasses.replace(buffer.set.subset(indices), weights=weights)
            buffer.update(indices, stages.learner.step(batch, ctx))

    @staticmethod
    def state(stages: Stages, buffer: ReplayBuffer) -> dict:
        return {"stages": {name: stage.state_dict() for name, stage in stages.named().items()},
                "buffer": buffer.state_dict(), "rng": torch.get_rng_state()}

    @staticmethod
    def restore(checkpoint: Checkpoint, stages: Stages, buffer: ReplayBuffer, ctx) -> int:
        """The first round to run: 0, or the one after the checkpoint's (whose state is restored)."""
        resumed = checkpoint.load()
        if resumed is None:
            return 0
        done, state = resumed
        for name, stage in stages.named().items():
            stage.load_state_dict(state["stages"][name])
        buffer.load_state_dict(state["buffer"], ctx.device)
        torch.set_rng_state(state["rng"])
        log.info("rounds: resumed from %s after round %d", checkpoint.path, done)
        return done
