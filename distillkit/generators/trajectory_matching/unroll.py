"""Unrolling the student's steps and back-propagating the matching loss to the pixels, the lr and the
labels: with every step's graph kept, or one step's graph at a time."""

from __future__ import annotations

import torch

from distillkit.generators.trajectory_matching.student import StepPlan


def unroll_full(step, start: torch.Tensor, plans: list[StepPlan], loss_fn, leaves: list[torch.Tensor]) -> torch.Tensor:
    """Unroll with every step's graph kept; back-propagate ``loss_fn(θ_N)`` into ``leaves``' ``.grad``."""
    theta = start.clone().requires_grad_(True)
    for plan in plans:
        theta = step(theta, plan, create_graph=True)
    loss = loss_fn(theta)
    torch.autograd.backward(loss, inputs=leaves)
    return loss.detach()


def unroll_checkpointed(step, start: torch.Tensor, plans: list[StepPlan], loss_fn,
                        leaves: list[torch.Tensor]) -> torch.Tensor:
    """The same gradients as :func:`unroll_full`, holding one step's graph at a time.

    Forward: the steps without a second-order graph, keeping each θ_k (one parameter vector per
    step). Backward: from ``a_N = ∂L/∂θ_N`` walk the steps in reverse, rebuild step k's graph from
    θ_k and its plan, and take the vector-Jacobian product with ``a_{k+1}``: it yields ``a_k`` and
    step k's contribution to the gradients of the pixels, the lr and the labels.
    """
    thetas = [start]
    for plan in plans:
        theta = thetas[-1].detach().requires_grad_(True)
        thetas.append(step(theta, plan, create_graph=False).detach())
    final = thetas.pop().requires_grad_(True)
    loss = loss_fn(final)
    adjoint, = torch.autograd.grad(loss, final)
    for plan, theta in zip(reversed(plans), reversed(thetas)):
        theta = theta.detach().requires_grad_(True)
        following = step(theta, plan, create_graph=True)
        adjoint, *grads = torch.autograd.grad(following, [theta, *leaves], grad_outputs=adjoint, allow_unused=True)
        for leaf, grad in zip(leaves, grads):
            if grad is not None:
                leaf.grad = grad if leaf.grad is None else leaf.grad + grad
    return loss.detach()
