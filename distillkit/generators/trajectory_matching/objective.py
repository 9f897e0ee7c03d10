"""The objective: the normalised parameter-matching loss over the elements PAD keeps."""

from __future__ import annotations

import torch

# ---------------------------------------------------------------------------------------------
# The objective
# ---------------------------------------------------------------------------------------------

def kept_elements(selection: str, ratio: float, error: torch.Tensor):
    """The parameter elements the loss keeps (PAD): all; all but the shallowest ``ratio`` of the
    flattened vector (``depth``, parameters in ``named_parameters`` order); or all but the ``ratio``
    with the smallest matching error (``loss``; the choice itself carries no gradient)."""
    dropped = int(ratio * error.numel())
    if selection == "none" or dropped == 0:
        return slice(None)
    if selection == "depth":
        return slice(dropped, None)
    return torch.argsort(error.detach())[dropped:]


def matching_loss(student: torch.Tensor, start: torch.Tensor, target: torch.Tensor, selection: str = "none",
                  ratio: float = 0.0) -> torch.Tensor:
    """``‖θ_N − θ*_{t+M}‖² / ‖θ*_t − θ*_{t+M}‖²`` over the kept elements (MTT's 1/P factors cancel)."""
    error = (student - target).square()
    keep = kept_elements(selection, ratio, error)
    return error[keep].sum() / (start - target).square()[keep].sum()
