"""SGD with momentum whose step a device-side mask can skip (DATM's loss threshold)."""

from __future__ import annotations

import torch


class MaskedSGD:
    """SGD with momentum (PyTorch's update, no dampening) whose step only happens where ``accept``
    holds — a device-side bool, so DATM's loss threshold needs no host sync."""

    def __init__(self, groups: list[tuple[torch.Tensor, float, float]]):
        self.groups = groups
        self.buffers = [torch.zeros_like(p) for p, _, _ in groups]

    def zero_grad(self) -> None:
        for p, _, _ in self.groups:
            p.grad = None

    @torch.no_grad()
    def step(self, accept: torch.Tensor) -> None:
        for (p, lr, momentum), buffer in zip(self.groups, self.buffers):
            grad = p.grad if p.grad is not None else torch.zeros_like(p)
            buffer.copy_(torch.where(accept, buffer * momentum + grad, buffer))
            p.sub_(buffer * (lr * accept.to(p.dtype)))

    def state_dict(self) -> dict:
        return {"buffers": [b.detach().cpu() for b in self.buffers]}

    def load_state_dict(self, state: dict) -> None:
        for buffer, saved in zip(self.buffers, state["buffers"]):
            buffer.copy_(saved)
