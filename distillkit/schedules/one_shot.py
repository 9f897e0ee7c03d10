"""The ``one_shot`` schedule: generator → scorer → sampler once, then the evaluator (most methods)."""

from __future__ import annotations

from typing import Literal

from distillkit.schedules import Artefacts, Outcome, Schedule, Stages, prepare_roles
from distillkit.validation import ConfigError, validated


class OneShot(Schedule):
    """``stop_after``: ``prepare`` (train the roles, e.g. this job's shard of expert trajectories, and
    stop), ``sample`` (save the distilled set, do not evaluate) or ``evaluate`` (everything)."""

    @validated
    def __init__(self, stop_after: Literal["prepare", "sample", "evaluate"] = "evaluate"):
        self.stop_after = stop_after

    def check(self, stages: Stages, roles) -> None:
        for name in stages.roles():
            if roles.role(name).partial and self.stop_after != "prepare":
                raise ConfigError("schedule.stop_after", f"roles.{name} trains only a shard of itself in this job: "
                                  "add schedule.stop_after=prepare, then distil in a job without a shard")

    def run(self, stages: Stages, ctx, artefacts: Artefacts) -> Outcome:
        prepare_roles(stages, ctx, artefacts)
        if self.stop_after == "prepare":
            return Outcome("prepared")
        with artefacts.timed("generator"):
            pool = stages.generator(ctx)
        artefacts.images_generated += len(pool) if stages.generator.makes_images else 0
        with artefacts.timed("scorer"):
            scores = stages.scorer(pool, ctx)
        with artefacts.timed("sampler"):
            distilled = pool.subset(stages.sampler(pool, scores, ctx)).to("cpu")
        artefacts.save_set(distilled)
        if self.stop_after == "sample":
            return Outcome("distilled", distilled)
        with artefacts.timed("evaluator"):
            report = stages.evaluator(distilled, ctx)
        return Outcome("evaluated", distilled, report)
