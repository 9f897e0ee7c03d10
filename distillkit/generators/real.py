"""The real training set as the pool: what random / herding / k-center / full select from."""

from __future__ import annotations

from distillkit.context import seeded
from distillkit.data.synthetic import SyntheticSet
from distillkit.generators.iterative import positive_int
from distillkit.samplers.coreset import random_per_class


class RealPool:
    """Every real training image with its label; selection is the sampler's job.

    ``pool_factor``: keep only ``pool_factor × ipc`` random images per class (drawn with the run
    seed + ``seed``), a real pool the size of a generated one — DGS's sampler on real images.
    """

    def __init__(self, pool_factor: int | None = None, seed: int = 0):
        self.pool_factor = None if pool_factor is None else positive_int("pool_factor", pool_factor)
        self.seed = int(seed)

    def __call__(self, ctx) -> SyntheticSet:
        pool = SyntheticSet(ctx.train_images, ctx.train_labels, meta={"source": "real"})
        if self.pool_factor is None:
            return pool
        kept = random_per_class(pool, self.pool_factor * ctx.ipc, ctx.data.num_classes, seeded(ctx.seed + self.seed))
        return pool.subset(kept)
