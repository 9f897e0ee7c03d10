"""Scorers that need no model."""


class NoScores:
    """For samplers that ignore difficulty (all, random, herding, k-center)."""

    def __call__(self, pool, ctx):
        return None
