"""PAD's easy-to-hard data schedule for expert trajectories (Li et al., *Prioritize Alignment in
Dataset Distillation*, 2024).

A scorer orders each class from easy to hard; for epoch ``e`` an expert trains on

* ``e <= add_end_epoch``: the easiest ``min(1, init_ratio + (1 - init_ratio) · e / add_end_epoch)``
  of every class (hard samples are added as training goes on),
* ``add_end_epoch < e <= remove_first_epoch``: all data,
* ``remove_first_epoch < e <= remove_second_epoch``: all but the easiest ``remove_first_ratio``,
* later: all but the easiest ``remove_second_ratio``.

Fractions are taken of each class's own size (the released code hard-codes 5000 per class, which
is wrong for CIFAR-100 and TinyImageNet). The boundaries are inclusive as in the released code.
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import Field

from distillkit.stages import Sampler
from distillkit.validation import ConfigError, Float, NonNegativeInt, validated

# fractions of every class: the first epoch needs some data, every epoch must keep some
KeptFraction = Annotated[Float, Field(gt=0, le=1)]
DroppedFraction = Annotated[Float, Field(ge=0, lt=1)]


class CurriculumSampler(Sampler):
    """Which real samples an expert sees in each epoch (``conf/sampler/curriculum.yaml``).

    Not a pool sampler: the expert role asks it for each epoch's indices (``order`` then ``indices``).
    """

    @validated
    def __init__(self, init_ratio: KeptFraction = 0.75, add_end_epoch: NonNegativeInt = 20,
                 remove_first_epoch: NonNegativeInt = 40, remove_second_epoch: NonNegativeInt = 60,
                 remove_first_ratio: DroppedFraction = 0.1, remove_second_ratio: DroppedFraction = 0.2):
        if not add_end_epoch <= remove_first_epoch <= remove_second_epoch:
            raise ConfigError("add_end_epoch", "the curriculum needs add_end_epoch <= remove_first_epoch <= "
                              f"remove_second_epoch (got {add_end_epoch}, {remove_first_epoch}, {remove_second_epoch})")
        self.init_ratio, self.add_end_epoch = init_ratio, add_end_epoch
        self.remove_first_epoch, self.remove_second_epoch = remove_first_epoch, remove_second_epoch
        self.remove_first_ratio, self.remove_second_ratio = remove_first_ratio, remove_second_ratio

    def __call__(self, pool, scores, ctx):
        raise ConfigError("sampler", "the curriculum sampler orders an expert's epochs "
                          "(sampler@roles.experts.curriculum.sampler=curriculum), it does not sample a pool")

    def settings(self) -> dict:
        return dict(vars(self))

    def window(self, epoch: int) -> tuple[float, float]:
        """The kept part of every class in ``epoch`` as fractions ``(start, stop)`` of its easy→hard order."""
        if epoch <= self.add_end_epoch:
            progress = epoch / self.add_end_epoch if self.add_end_epoch > 0 else 1.0
            return 0.0, min(1.0, self.init_ratio + (1.0 - self.init_ratio) * progress)
        if epoch <= self.remove_first_epoch:
            return 0.0, 1.0
        if epoch <= self.remove_second_epoch:
            return self.remove_first_ratio, 1.0
        return self.remove_second_ratio, 1.0

    @staticmethod
    def order(scores: torch.Tensor, labels: torch.Tensor, num_classes: int) -> list[torch.Tensor]:
        """Per class, the indices of its samples sorted easy→hard (ascending score; ties by index)."""
        ordered = []
        for c in range(num_classes):
            members = torch.nonzero(labels == c).flatten()
            ranking = torch.sort(scores[members].float(), stable=True).indices
            ordered.append(members[ranking])
        return ordered

    def indices(self, ordered: list[torch.Tensor], epoch: int) -> torch.Tensor:
        """The samples of ``epoch``: the same window of every class's easy→hard order, at least one each."""
        start, stop = self.window(epoch)
        kept = []
        for members in ordered:
            n = len(members)
            first = min(int(start * n), n - 1)
            kept.append(members[first:max(first + 1, int(stop * n))])
        return torch.cat(kept)
