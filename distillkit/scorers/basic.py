"""Scorers that need no model."""

from distillkit.stages import Scorer


class NoScores(Scorer):
    """For samplers that ignore difficulty (all, random, herding, k-center)."""

    def __call__(self, pool, ctx):
        return None
