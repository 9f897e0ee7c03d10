"""Real images of every class at once, and siamese DSA with one draw per class."""

from __future__ import annotations

import torch

from distillkit.data.augment import DSA

# ---------------------------------------------------------------------------------------------
# Pieces of one matching run
# ---------------------------------------------------------------------------------------------

class ClassBatches:
    """Random real images of every class at once: draws return an n_classes × k index table.

    Each row is a uniform sample without replacement from that class (the reference's
    ``permutation[:k]``), drawn on the device with no host round trip.
    """

    def __init__(self, labels: torch.Tensor, num_classes: int):
        counts = torch.bincount(labels, minlength=num_classes)
        self.counts = counts.tolist()
        order = torch.argsort(labels, stable=True)
        starts = torch.cumsum(counts, 0) - counts
        sorted_labels = labels[order]
        rank = torch.arange(len(labels), device=labels.device) - starts[sorted_labels]
        self.table = torch.full((num_classes, max(self.counts)), -1, dtype=torch.long, device=labels.device)
        self.table[sorted_labels, rank] = order
        self.padding = self.table < 0

    @property
    def smallest(self) -> int:
        return min(self.counts)

    def draw(self, per_class: int) -> torch.Tensor:
        keys = torch.rand(self.table.shape, device=self.table.device).masked_fill_(self.padding, -1.0)
        return self.table.gather(1, keys.topk(per_class, dim=1).indices)


def augment_per_class(augment: DSA, real: torch.Tensor, syn: torch.Tensor, groups: int):
    """Siamese DSA with a separate draw (op and parameters) for each class, as the reference does."""
    pairs = [augment.siamese(r, s) for r, s in zip(real.chunk(groups), syn.chunk(groups))]
    return torch.cat([r for r, _ in pairs]), torch.cat([s for _, s in pairs])
