"""D2C's interval sampling (Select) and the orders its paper ablates.

Per class, the pool is sorted by score, ascending (easy → hard; ties by pool index), and ``ipc`` ranks
are taken from that order:

* ``interval`` — ranks 0, k, 2k, …, (ipc − 1)·k. ``step`` gives k; otherwise
  ``k = max(1, floor(ratio · N_class / ipc))``. The paper gives k only for ImageNet (about 1 300 per
  class: k = 96 / 16 / 10 at 10 / 50 / 100 per class), which spans 60–77 % of each class's sorted list;
  ratio 0.7 is our inference from those settings, not the paper's words (docs/methods/d2c.md). A k
  whose last rank would fall past the class (k·(ipc − 1) ≥ N_class) is clamped to the largest that fits.
* ``easiest`` — ranks 0 … ipc − 1;  ``hardest`` — the last ipc ranks;
* ``centre_out`` — the ipc ranks around the median: start at the median and grow both ways.

The choice depends on the scores alone (no random draw): every run seed chooses the same.
"""

from __future__ import annotations

import logging
import math
from typing import Annotated, Literal

import torch
from pydantic import Field

from distillkit.errors import UserError
from distillkit.selection import per_class
from distillkit.stages import Sampler, Scores
from distillkit.validation import Float, PositiveInt, validated

log = logging.getLogger("distillkit")

ORDERS = ("interval", "easiest", "hardest", "centre_out")
# a fraction of each class's sorted list the interval spans; more than all of it would always be clamped
SpanRatio = Annotated[Float, Field(gt=0, le=1)]


def interval_step(size: int, ipc: int, step: int | None, ratio: float) -> tuple[int, bool]:
    """(k, whether it was clamped): ``step``, or ``max(1, floor(ratio · size / ipc))``, lowered when needed so
    that rank k·(ipc − 1) lies inside a class of ``size`` (≥ ipc) samples."""
    # the tolerance keeps floor exact where ratio·size/ipc is a whole number (0.7·1300/10 is 90.999… in floats)
    k = step if step is not None else max(1, math.floor(ratio * size / ipc + 1e-9))
    if ipc > 1 and k * (ipc - 1) >= size:
        return (size - 1) // (ipc - 1), True
    return k, False


def ranks(order: str, size: int, ipc: int, k: int = 1) -> torch.Tensor:
    """Which positions of a class's ascending order of ``size`` samples to take (``ipc`` ≤ ``size``)."""
    if order == "interval":
        return torch.arange(ipc) * k
    if order == "easiest":
        return torch.arange(ipc)
    if order == "hardest":
        return torch.arange(size - ipc, size)
    if order == "centre_out":  # the window of ipc ranks centred on the median (the lower one when it splits)
        return torch.arange(ipc) + (size - ipc) // 2
    raise ValueError(f"unknown order {order!r}")


class IntervalSampler(Sampler):
    """Per class, ``ipc`` samples at fixed ranks of the ascending score order (``conf/sampler/interval.yaml``).

    ``order``: ``interval`` (D2C) or an ablation (``easiest``, ``hardest``, ``centre_out``). ``step``: k for
    ``interval``, or None to derive it from ``ratio`` and each class's size.
    """

    @validated
    def __init__(self, order: Literal[ORDERS] = "interval", step: PositiveInt | None = None, ratio: SpanRatio = 0.7):
        self.order, self.step, self.ratio = order, step, ratio

    def __call__(self, pool, scores: Scores | None, ctx) -> torch.Tensor:
        if not isinstance(scores, Scores):
            raise UserError(f"the {self.order} sampler ranks by difficulty: it needs scores (e.g. "
                            "scorer=diffusion_difficulty)")
        if len(scores.pool) != len(pool):
            raise UserError(f"the scorer gave {len(scores.pool)} scores for a pool of {len(pool)}")
        values = scores.pool.to(pool.labels.device)
        chosen, clamped = [], []
        for c, idx in per_class(pool, ctx.ipc, ctx.data.num_classes):
            k, was_clamped = interval_step(len(idx), ctx.ipc, self.step, self.ratio)
            if self.order == "interval" and was_clamped:
                clamped.append(f"{ctx.data.classes[c]} ({len(idx)} samples: k={k})")
            ascending = idx[torch.sort(values[idx].float(), stable=True).indices]
            chosen.append(ascending[ranks(self.order, len(idx), ctx.ipc, k).to(idx.device)])
        if clamped:
            requested = f"step {self.step}" if self.step is not None else f"ratio {self.ratio:g}"
            log.info("interval sampler: %s would take ranks past the end of %d class(es) at ipc=%d; k lowered to fit: "
                     "%s", requested, len(clamped), ctx.ipc, ", ".join(clamped))
        return torch.cat(chosen)
