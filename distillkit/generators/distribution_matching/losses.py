"""The loss terms of distribution matching and decomposed DM (L_MMD, L_MM, L_CM, L_ICD)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

STD_EPS = 1e-5  # added to the variance before the square root, as the DDM code does


# ---------------------------------------------------------------------------------------------
# The loss terms. Embeddings and statistics arrive grouped by class: a leading dimension of
# ``n`` classes. Every term is summed over classes, as both reference codes do.
# ---------------------------------------------------------------------------------------------

def embedding_mean_loss(real_mean: torch.Tensor, syn_embeddings: torch.Tensor) -> torch.Tensor:
    """L_MMD: ``Σ_c ‖mean φ(real_c) − mean φ(syn_c)‖²`` from real means (n×D) and syn embeddings (n×ipc×D)."""
    return (real_mean - syn_embeddings.mean(1)).square().sum()


def style_statistics(features: torch.Tensor, groups: int, moments: bool, correlation: bool) -> dict:
    """Per-class style statistics of one layer's feature maps (``groups`` classes, equal batches).

    ``mean``/``std`` (n×C): channel-wise spatial mean and std of the batch-averaged feature map;
    ``gram`` (n×C×C): the batch average of per-sample Gram matrices ``F Fᵀ / (C·H·W)``.
    """
    x = features.float().unflatten(0, (groups, -1))  # n × batch × C × H × W
    channels, height, width = x.shape[2:]
    stats = {}
    if moments:
        mean_map = x.mean(1).flatten(2)  # n × C × HW
        # Unbiased variance as in the DDM code; a single-pixel map has only the biased one.
        correction = 1 if height * width > 1 else 0
        stats["mean"] = mean_map.mean(2)
        stats["std"] = (mean_map.var(2, correction=correction) + STD_EPS).sqrt()
    if correlation:
        # Per-sample Grams then the mean: n·batch·C² floats, less than a transposed copy of x.
        flat = x.flatten(3)
        stats["gram"] = (flat @ flat.transpose(-1, -2)).mean(1) / (channels * height * width)
    return stats


def moments_loss(syn_layers: list[dict], real_layers: list[dict]) -> torch.Tensor:
    """L_MM: per class and layer ``(MSE(μ_s, μ_r) + MSE(σ_s, σ_r)) / 2``, mean over layers, sum over classes."""
    per_layer = [0.5 * ((s["mean"] - r["mean"]).square().mean(1) + (s["std"] - r["std"]).square().mean(1))
                 for s, r in zip(syn_layers, real_layers)]
    return torch.stack(per_layer).mean(0).sum()


def correlation_loss(syn_layers: list[dict], real_layers: list[dict]) -> torch.Tensor:
    """L_CM: per class and layer ``‖Ḡ_s − Ḡ_r‖²_F`` (a sum over entries, as the DDM code), mean over
    layers, sum over classes."""
    per_layer = [(s["gram"] - r["gram"]).square().sum((1, 2)) for s, r in zip(syn_layers, real_layers)]
    return torch.stack(per_layer).mean(0).sum()


def diversity_loss(syn_embeddings: torch.Tensor, neighbours: int) -> torch.Tensor:
    """L_ICD: ``−KL(softmax φ_i ‖ softmax m_i)`` with m_i the mean of φ_i's k nearest same-class
    synthetic neighbours (Euclidean, itself excluded); mean over samples, sum over classes.

    ``syn_embeddings`` is n×ipc×D. With one image per class there is no neighbour: zero.
    """
    groups, per_class, _ = syn_embeddings.shape
    k = min(neighbours, per_class - 1)
    if k < 1:
        return syn_embeddings.new_zeros(())
    with torch.no_grad():  # choosing neighbours is not differentiable; only the KL is
        distance = torch.cdist(syn_embeddings, syn_embeddings)
        distance.diagonal(dim1=1, dim2=2).fill_(math.inf)
        nearest = distance.topk(k, dim=2, largest=False).indices
        weights = torch.zeros_like(distance).scatter_(2, nearest, 1.0 / k)
    neighbour_mean = weights @ syn_embeddings  # n × ipc × D; gradients reach the neighbours too
    log_p = F.log_softmax(syn_embeddings, dim=-1)
    log_q = F.log_softmax(neighbour_mean, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)
    return -kl.mean(1).sum()
