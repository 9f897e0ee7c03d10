"""Real training images as the pool: all of them (what random / herding / k-center / full select
from), or a fresh random batch at every call (a stream for the ``rounds`` schedule)."""

from __future__ import annotations

from distillkit.data.synthetic import SyntheticSet
from distillkit.selection import SeededDraws, random_per_class, seeded, smallest_class
from distillkit.stages import Generator
from distillkit.validation import ConfigError, Int, PositiveInt, validated


class RealPool(Generator):
    """Every real training image with its label; selection is the sampler's job.

    ``pool_factor``: keep only ``pool_factor × ipc`` random images per class (drawn with the run
    seed + ``seed``), a real pool the size of a generated one — DGS's sampler on real images.
    """

    makes_images = False

    @validated
    def __init__(self, pool_factor: PositiveInt | None = None, seed: Int = 0):
        self.pool_factor, self.seed = pool_factor, seed

    def check(self, ctx) -> None:
        if self.pool_factor is not None:
            c, count = smallest_class(ctx.data.train_labels, ctx.data.num_classes)
            if count < self.pool_factor * ctx.ipc:
                raise ConfigError("generator.pool_factor", f"{self.pool_factor} × ipc={ctx.ipc} needs that many real "
                                  f"images per class; class {c} has {count}")

    def known_smallest_class(self, ctx) -> tuple[int, int] | None:
        if self.pool_factor is not None:  # check() has made sure it holds pool_factor × ipc ≥ ipc
            return None
        return smallest_class(ctx.data.train_labels, ctx.data.num_classes)

    def __call__(self, ctx) -> SyntheticSet:
        pool = SyntheticSet(ctx.train_images, ctx.train_labels, meta={"source": "real"})
        if self.pool_factor is None:
            return pool
        kept = random_per_class(pool, self.pool_factor * ctx.ipc, ctx.data.num_classes, seeded(ctx.seed + self.seed))
        return pool.subset(kept)


class RealBatches(SeededDraws, Generator):
    """At every call, ``per_class`` random real training images per class (a real-data stream for the
    ``rounds`` schedule: the control a synthetic stream is measured against). Draws continue one RNG
    across calls, seeded with the run seed + ``seed``, and checkpointed with the schedule."""

    makes_images = False

    @validated
    def __init__(self, per_class: PositiveInt = 10, seed: Int = 0):
        self.per_class, self.seed = per_class, seed

    def __call__(self, ctx) -> SyntheticSet:
        pool = SyntheticSet(ctx.train_images, ctx.train_labels, meta={"source": "real"})
        draws = self.draws(ctx.seed + self.seed)
        return pool.subset(random_per_class(pool, self.per_class, ctx.data.num_classes, draws))
