"""A fixed-size replay buffer of samples, one score each (the ``rounds`` schedule's memory)."""

from __future__ import annotations

import torch

from distillkit.data.synthetic import SyntheticSet


class ReplayBuffer:
    """At most ``size`` samples. New samples enter at the end; a full buffer drops its ``oldest``
    entries, or the ones with the ``lowest`` scores, to make room. ``scores`` are what the scorer gave
    each sample on entry (zero without a scorer) and what the learner's feedback set since."""

    def __init__(self, size: int, replace: str = "oldest"):
        self.size, self.replace = size, replace
        self.set: SyntheticSet | None = None
        self.scores = torch.zeros(0)
        self.ages = torch.zeros(0, dtype=torch.long)  # rounds since the sample entered
        self.added = 0  # samples that ever entered

    def __len__(self) -> int:
        return 0 if self.set is None else len(self.set)

    def add(self, batch: SyntheticSet, scores: torch.Tensor | None) -> None:
        """Take ``batch`` in (on its device) with its ``scores`` (zeros when None); make room if full."""
        device = batch.images.device
        scores = torch.zeros(len(batch), device=device) if scores is None else scores.float().to(device)
        fresh = torch.zeros(len(batch), dtype=torch.long, device=device)
        if self.set is None:
            self.set, self.scores, self.ages = batch, scores, fresh
        else:
            self.set = self.set.concat(batch)
            self.scores, self.ages = torch.cat([self.scores, scores]), torch.cat([self.ages + 1, fresh])
        self.added += len(batch)
        if len(self.set) > self.size:
            self._shrink()

    def _shrink(self) -> None:
        # keep the youngest (or the highest-scored) ``size`` samples, in their order of entry
        rank = -self.ages.float() if self.replace == "oldest" else self.scores
        kept = torch.sort(torch.topk(rank, self.size, sorted=False).indices).values
        self.set, self.scores, self.ages = self.set.subset(kept), self.scores[kept], self.ages[kept]

    def update(self, indices: torch.Tensor, values: torch.Tensor | None) -> None:
        if values is not None:
            self.scores[indices.to(self.scores.device)] = values.detach().float().to(self.scores.device)

    def state_dict(self) -> dict:
        state = {"scores": self.scores.cpu(), "ages": self.ages.cpu(), "added": self.added}
        if self.set is not None:
            state["images"], state["labels"] = self.set.images.detach().cpu(), self.set.labels.cpu()
            if self.set.soft_labels is not None:
                state["soft_labels"] = self.set.soft_labels.cpu()
        return state

    def load_state_dict(self, state: dict, device) -> None:
        self.scores, self.ages, self.added = state["scores"].to(device), state["ages"].to(device), state["added"]
        if "images" in state:
            self.set = SyntheticSet(state["images"], state["labels"], state.get("soft_labels")).to(device)
