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

import torch

from distillkit.errors import UserError


class CurriculumSampler:
    """Which real samples an expert sees in each epoch (``conf/sampler/curriculum.yaml``)."""

    def __init__(self, init_ratio: float = 0.75, add_end_epoch: int = 20, remove_first_epoch: int = 40,
                 remove_second_epoch: int = 60, remove_first_ratio: float = 0.1, remove_second_ratio: float = 0.2):
        for name, value in (("init_ratio", init_ratio), ("remove_first_ratio", remove_first_ratio),
                            ("remove_second_ratio", remove_second_ratio)):
            if not 0.0 <= float(value) <= 1.0:
                raise UserError(f"sampler.{name} must lie in [0, 1] (got {value!r})")
        if float(init_ratio) == 0.0:
            raise UserError("sampler.init_ratio must be above 0: the first epoch needs some data")
        if max(float(remove_first_ratio), float(remove_second_ratio)) >= 1.0:
            raise UserError("sampler.remove_*_ratio must be below 1: every epoch needs some data")
        if not 0 <= int(add_end_epoch) <= int(remove_first_epoch) <= int(remove_second_epoch):
            raise UserError("the curriculum needs 0 <= add_end_epoch <= remove_first_epoch <= remove_second_epoch "
                            f"(got {add_end_epoch}, {remove_first_epoch}, {remove_second_epoch})")
        self.init_ratio, self.add_end_epoch = float(init_ratio), int(add_end_epoch)
        self.remove_first_epoch, self.remove_second_epoch = int(remove_first_epoch), int(remove_second_epoch)
        self.remove_first_ratio, self.remove_second_ratio = float(remove_first_ratio), float(remove_second_ratio)

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
