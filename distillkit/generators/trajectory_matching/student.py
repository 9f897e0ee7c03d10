"""The functional student: its parameters as one flat vector, and one SGD step on a synthetic batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import functional_call

from distillkit.data.augment import DSA
from distillkit.training import autocast, classification_loss


class FlatParameters:
    """A model's parameters as one flat vector (``named_parameters`` order) and back, as views."""

    def __init__(self, model: torch.nn.Module):
        self.names = [name for name, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]
        self.sizes = [p.numel() for _, p in model.named_parameters()]
        self.total = sum(self.sizes)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: part.view(shape)
                for name, part, shape in zip(self.names, flat.split(self.sizes), self.shapes)}


@dataclass
class StepPlan:
    """What one unrolled student step reads: the synthetic batch and the seed of its augmentation."""

    indices: torch.Tensor
    seed: int


class Student:
    """One SGD step of a functional student: ``θ − α ∇_θ CE(f_θ(A(x)), y)``.

    The augmentation of a step is drawn from the step's own seed (in a forked RNG), so recomputing
    the step (``memory: checkpoint``) sees exactly the same transform.
    """

    def __init__(self, model: torch.nn.Module, dsa_strategy: str | None, amp: bool, device: torch.device):
        self.model, self.layout = model, FlatParameters(model)
        self.dsa_strategy, self.amp, self.device = dsa_strategy, amp, device
        self.rng_devices = [device] if device.type == "cuda" else []

    def step(self, theta: torch.Tensor, plan: StepPlan, images: torch.Tensor, labels: torch.Tensor,
             lr: torch.Tensor, create_graph: bool) -> torch.Tensor:
        """``labels``: class indices, or learnable logits whose softmax is the soft target (DATM)."""
        with torch.random.fork_rng(devices=self.rng_devices):
            torch.manual_seed(plan.seed)
            x = images[plan.indices]
            if self.dsa_strategy:
                x = DSA(self.dsa_strategy, seed=plan.seed)(x)
            with autocast(self.device, self.amp, on_cpu=True):
                logits = functional_call(self.model, self.layout.unflatten(theta), (x,))
        targets = labels[plan.indices]
        loss = classification_loss(logits, targets.softmax(1) if targets.dtype.is_floating_point else targets)
        grad, = torch.autograd.grad(loss, theta, create_graph=create_graph)
        return theta - lr * grad
