"""Per-class selection helpers that samplers and generators share (neither imports the other)."""

from __future__ import annotations

import torch

from distillkit.errors import UserError


def seeded(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``: draws that do not depend on (or move) the global RNG."""
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


class SeededDraws:
    """For a stage whose random draws continue across calls (a stream, a sampler called every learner step):
    one CPU generator, seeded at the first draw, whose state is the stage's ``state_dict`` (so the ``rounds``
    checkpoint carries it)."""

    generator: torch.Generator | None = None

    def draws(self, seed: int) -> torch.Generator:
        """The generator, seeded with ``seed`` at the first call and continued after."""
        if self.generator is None:
            self.generator = seeded(seed)
        return self.generator

    def state_dict(self) -> dict:
        return {} if self.generator is None else {"rng": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if "rng" in state:
            self.generator = torch.Generator()
            self.generator.set_state(state["rng"])


def per_class(pool, count: int, num_classes: int):
    """Yield (class, pool indices of that class); a class with fewer than ``count`` samples is an error."""
    for c in range(num_classes):
        idx = torch.nonzero(pool.labels == c).flatten()
        if len(idx) < count:
            raise UserError(f"class {c} has {len(idx)} samples in the pool, fewer than ipc={count}")
        yield c, idx


def random_per_class(pool, count: int, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """Pool indices of ``count`` samples per class, uniformly without replacement, class by class."""
    return torch.cat([idx[torch.randperm(len(idx), generator=generator)[:count].to(idx.device)]
                      for _, idx in per_class(pool, count, num_classes)])


def smallest_class(labels: torch.Tensor, num_classes: int) -> tuple[int, int]:
    """(class, count) of the class with the fewest samples."""
    counts = torch.bincount(labels.cpu(), minlength=num_classes)
    c = int(counts.argmin())
    return c, int(counts[c])


def held_out(labels: torch.Tensor, num_classes: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(kept, held-out) indices: ``fraction`` of every class, at least one image of each class that has two,
    drawn with ``seed``; both sorted."""
    generator = seeded(seed)
    kept, held = [], []
    for c in range(num_classes):
        members = torch.nonzero(labels.cpu() == c).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        count = min(len(members) - 1, max(1, round(fraction * len(members)))) if len(members) > 1 else 0
        held.append(members[:count])
        kept.append(members[count:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values


def within_class_quantiles(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each sample's rank within its class as a fraction, 0 for the class's lowest score and 1 for its highest
    (how far along its class's easy → hard order a pick sits)."""
    out = torch.empty(len(scores), dtype=torch.double)
    for c in labels.unique():
        members = torch.nonzero(labels == c).flatten()
        out[members] = scores[members].argsort().argsort().double() / max(len(members) - 1, 1)
    return out
