"""Schedules: the loop that runs a method's stages (``conf/schedule``).

* ``one_shot`` — roles, then generator → scorer → sampler once, then the evaluator on the set
  (:mod:`~distillkit.schedules.one_shot`); ``stop_after`` ends a job early (``prepare``: train the
  roles only, e.g. one shard of expert trajectories; ``sample``: distil without evaluating).
* ``rounds`` — roles, then round after round: the generator makes a batch, the scorer scores it, a
  fixed-size replay buffer takes it in, and the sampler draws learner batches from the buffer; then
  the evaluator assesses the learner (:mod:`~distillkit.schedules.rounds`).

A schedule is handed the built :class:`Stages` and the run's :class:`Artefacts`, and returns an
:class:`Outcome`; ``run.py`` writes the results from it.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

from distillkit.checkpoint import carried_seconds
from distillkit.stages import EvalReport, Evaluator, Generator, Learner, Sampler, Scorer, Stage


@dataclass
class Stages:
    """The run's stages, built (and their settings checked) before any of them works."""

    generator: Generator
    scorer: Scorer
    sampler: Sampler
    evaluator: Evaluator
    learner: Learner | None = None

    def named(self) -> dict[str, Stage]:
        stages = {"generator": self.generator, "scorer": self.scorer, "sampler": self.sampler,
                  "evaluator": self.evaluator}
        return stages if self.learner is None else {**stages, "learner": self.learner}

    def roles(self) -> list[str]:
        """Every role a stage asks for, in stage order, once."""
        return list(dict.fromkeys(name for stage in self.named().values() for name in stage.roles))


@dataclass
class Outcome:
    """What a schedule made: the distilled set (None when it stopped before), the evaluator's report
    (None when it stopped before evaluating), and ``status``: ``prepared``, ``distilled`` or ``evaluated``."""

    status: str
    distilled: object = None
    report: EvalReport | None = None


@dataclass
class Artefacts:
    """What a schedule hands back to the run as it goes: the set to save (``save_set``, a callable
    from run.py), the wall-clock seconds of each phase and the images its generator made (the cost ledger)."""

    save_set: object
    seconds: dict = field(default_factory=dict)
    images_generated: int = 0

    @contextmanager
    def timed(self, phase: str):
        """Add the block's wall seconds to ``phase``, and those a checkpoint resumed in it had run before."""
        start = time.perf_counter()
        with carried_seconds() as earlier:
            yield
        self.seconds[phase] = round(self.seconds.get(phase, 0.0) + time.perf_counter() - start + earlier[0], 3)


class Schedule:
    """A loop over the stages; ``check(stages, roles)`` — the stages and roles it is given, settings only —
    runs when the run is planned, before any data is loaded."""

    #: whether the evaluator measures the one network this schedule trains (not networks it trains on the set): a
    #: run is then one measurement, and seeds are whole runs (``distillkit bench`` runs ``seed=0,1,…`` for it)
    trains_the_measured_network: ClassVar[bool] = False

    def check(self, stages: Stages, roles) -> None:
        pass

    def run(self, stages: Stages, ctx, artefacts: Artefacts) -> Outcome:
        raise NotImplementedError


def prepare_roles(stages: Stages, ctx, artefacts: Artefacts) -> None:
    """Train every role the stages ask for into the cache, then load each whole one — which checks it is
    good enough, so a bad role stops the run before any stage works — and print what it measured of
    itself. A job that trains one shard of a role (expert trajectories) cannot judge the whole yet."""
    with artefacts.timed("roles"):
        for name in stages.roles():
            ctx.roles.prepare(name, ctx)
            if not ctx.roles.role(name).partial:
                ctx.role(name)
                print(f"  role {name}: {ctx.roles.role(name).describe(ctx.roles.report[name])}", flush=True)
