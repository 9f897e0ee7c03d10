"""The real training set as the pool: what random / herding / k-center / full select from."""

from __future__ import annotations

from distillkit.data.synthetic import SyntheticSet


class RealPool:
    """Every real training image with its label; selection is the sampler's job."""

    def __call__(self, ctx) -> SyntheticSet:
        return SyntheticSet(ctx.train_images, ctx.train_labels, meta={"source": "real"})
