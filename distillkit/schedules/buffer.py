"""A replay buffer of samples, one score each (the ``rounds`` schedule's memory)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from distillkit.data.synthetic import SyntheticSet


def rank_within_class(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """For each position, how many earlier positions hold the same label (0 for a class's first)."""
    onehot = F.one_hot(labels.long(), num_classes)
    return (onehot.cumsum(0) * onehot).sum(1) - 1


class ReplayBuffer:
    """At most ``size`` samples (``None``: no limit, nothing is ever evicted — a memory bank that grows).

    New samples enter at the end. A full buffer makes room by ``replace``:

    * ``oldest`` — drops its oldest entries (first in, first out);
    * ``lowest`` — drops the entries with the lowest scores;
    * ``balanced`` — a partial, per-class update: each class holds at most ``size // num_classes``
      entries. A new batch is taken in the order of its entry scores (the scorer's, highest first), at
      most ``admit`` of it and no more of a class than a class may hold; each admitted sample fills room
      in its class or replaces that class's lowest-scored older entry (the older one first on a tie).

    ``scores`` are what the sampler reads and the learner's feedback overwrites. ``new_score`` says what
    a new entry starts with: ``scorer`` — its entry score (zero without a scorer); ``max`` — the highest
    score in the buffer (1 in an empty one), so a prioritized sampler draws it soon (prioritized replay).
    """

    def __init__(self, size: int | None, replace: str = "oldest", num_classes: int | None = None,
                 admit: float = 1.0, new_score: str = "scorer"):
        if replace == "balanced" and (size is None or not num_classes):
            raise ValueError("a balanced buffer needs a size and the number of classes")
        self.size, self.replace, self.num_classes = size, replace, num_classes
        self.admit, self.new_score = admit, new_score
        self.set: SyntheticSet | None = None
        self.scores = torch.zeros(0)
        self.ages = torch.zeros(0, dtype=torch.long)  # rounds since the sample entered
        self.offered = 0  # samples ever handed to add (a balanced buffer admits only some)
        self.added = 0  # samples that ever entered
        self.peak = 0  # the most samples it held after a round's update

    def __len__(self) -> int:
        return 0 if self.set is None else len(self.set)

    @property
    def per_class(self) -> int | None:
        """How many entries one class may hold (balanced buffers)."""
        return self.size // self.num_classes if self.replace == "balanced" else None

    def add(self, batch: SyntheticSet, scores: torch.Tensor | None) -> None:
        """Take ``batch`` in (on its device) with its entry ``scores`` (zeros when None); make room if full."""
        device = batch.images.device
        scores = torch.zeros(len(batch), device=device) if scores is None else scores.float().to(device)
        self.offered += len(batch)
        if self.replace == "balanced":
            chosen = self._admitted(batch.labels, scores)
            batch, scores = batch.subset(chosen), scores[chosen]
        if self.new_score == "max":
            top = self.scores.max() if len(self) else torch.ones((), device=device)
            scores = top.to(device).expand(len(batch)).clone()
        fresh = torch.zeros(len(batch), dtype=torch.long, device=device)
        if self.set is None:
            self.set, self.scores, self.ages = batch, scores, fresh
        else:
            self.set = self.set.concat(batch)
            self.scores, self.ages = torch.cat([self.scores, scores]), torch.cat([self.ages + 1, fresh])
        is_new = torch.arange(len(self.set), device=device) >= len(self.set) - len(batch)
        self.added += len(batch)
        if self.replace == "balanced":
            self._balance(is_new)
        elif self.size is not None and len(self.set) > self.size:
            self._shrink()
        self.peak = max(self.peak, len(self))

    def _admitted(self, labels: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Batch positions that enter a balanced buffer: highest entry score first, at most ``per_class`` of
        a class, at most ``ceil(admit × batch)`` in all."""
        order = torch.sort(-scores, stable=True).indices
        eligible = order[rank_within_class(labels[order], self.num_classes) < self.per_class]
        return eligible[:math.ceil(self.admit * len(labels))]

    def _keep(self, kept: torch.Tensor) -> None:
        kept = torch.sort(kept).values  # in their order of entry
        self.set, self.scores, self.ages = self.set.subset(kept), self.scores[kept], self.ages[kept]

    def _balance(self, is_new: torch.Tensor) -> None:
        # per class, keep the new entries, then the older ones by score (younger first on a tie)
        by_age = torch.argsort(self.ages, stable=True)
        key = torch.where(is_new, torch.full_like(self.scores, float("inf")), self.scores)[by_age]
        order = by_age[torch.sort(-key, stable=True).indices]
        self._keep(order[rank_within_class(self.set.labels[order], self.num_classes) < self.per_class])

    def _shrink(self) -> None:
        # keep the youngest (or the highest-scored) ``size`` samples
        rank = -self.ages.float() if self.replace == "oldest" else self.scores
        self._keep(torch.topk(rank, self.size, sorted=False).indices)

    def update(self, indices: torch.Tensor, values: torch.Tensor | None) -> None:
        if values is not None:
            self.scores[indices.to(self.scores.device)] = values.detach().float().to(self.scores.device)

    def state_dict(self) -> dict:
        state = {"scores": self.scores.cpu(), "ages": self.ages.cpu(), "added": self.added, "offered": self.offered,
                 "peak": self.peak}
        if self.set is not None:
            state["images"], state["labels"] = self.set.images.detach().cpu(), self.set.labels.cpu()
            if self.set.soft_labels is not None:
                state["soft_labels"] = self.set.soft_labels.cpu()
        return state

    def load_state_dict(self, state: dict, device) -> None:
        self.scores, self.ages, self.added = state["scores"].to(device), state["ages"].to(device), state["added"]
        self.peak, self.offered = state.get("peak", len(state["scores"])), state.get("offered", state["added"])
        if "images" in state:
            self.set = SyntheticSet(state["images"], state["labels"], state.get("soft_labels")).to(device)
