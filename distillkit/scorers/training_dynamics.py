"""Difficulty from early training dynamics (Paul et al., *Deep Learning on a Data Diet*, 2021): the
scores PAD uses to order each class easy→hard for its expert curriculum.

* **EL2N** — ``‖softmax(f(x)) − onehot(y)‖₂`` after a few epochs of training,
* **GraNd** — ``‖∇_θ ℓ(f(x), y)‖₂``, the norm of the per-sample loss gradient over every parameter,

each averaged over ``num_models`` independently initialised networks trained ``epochs`` epochs on
the real training set with the shared training loop. ``epochs: 0`` scores at initialisation
(GraNd's original setting). Low = easy.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from distillkit.models import ModelSpec
from distillkit.progress import progress
from distillkit.roles.classifier import TrainedClassifier
from distillkit.stages import Scorer, Scores
from distillkit.training import TrainSpec, predict
from distillkit.validation import (Int, NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt,
                                   plain, validated)

log = logging.getLogger("distillkit")


class _TrainingDynamicsScorer(Scorer):
    name = ""

    @validated
    def __init__(self, model: ModelSpec = "convnet", num_models: PositiveInt = 4, epochs: NonNegativeInt = 10,
                 lr: PositiveFloat = 0.01, batch_size: PositiveInt = 256, momentum: NonNegativeFloat = 0.9,
                 weight_decay: NonNegativeFloat = 5e-4, dsa_strategy: str | None = "color_crop_cutout_flip_scale_rotate",
                 seed: Int = 0, score_batch_size: PositiveInt = 512, amp: bool = True, min_steps: NonNegativeInt = 0,
                 quality_floor: NonNegativeFloat = 2.0, accept_below_floor: bool = False):
        spec = TrainSpec(epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum, weight_decay=weight_decay,
                         schedule="constant", amp=amp, amp_on_cpu=True, min_steps=min_steps)
        # the briefly trained networks are classifier roles: cached, so a sweep trains them once; networks
        # scored at initialisation (epochs 0, GraNd's setting) are at chance by design: no floor
        self.networks = [TrainedClassifier(model=plain(model), train=spec, seed=seed + k, dsa_strategy=dsa_strategy,
                                           quality_floor=quality_floor if epochs else 0.0,
                                           accept_below_floor=accept_below_floor, name=f"{self.name} network {k}")
                         for k in range(num_models)]
        self.score_batch_size = score_batch_size

    def settings(self, ctx) -> dict:
        """What changes the scores on ``ctx``'s device (part of the cache key of anything trained on them)."""
        return {"scorer": self.name, "networks": [network.spec(ctx) for network in self.networks]}

    def __call__(self, pool, ctx) -> Scores:
        """One score per pool sample (the pool may be the real training set), averaged over the networks."""
        images, labels = pool.images.to(ctx.device), pool.labels.to(ctx.device)
        total = torch.zeros(len(labels), device=ctx.device)
        for network in progress(self.networks, desc=f"{self.name} scores", leave=False):
            network.key, network.steps_keys = self.key, ("min_steps", "epochs")  # messages name the scorer's keys
            total += self.score(ctx.roles.use(network, network.name, ctx), images, labels)
        return Scores(total / len(self.networks))

    def score(self, model, images, labels) -> torch.Tensor:
        raise NotImplementedError


class EL2N(_TrainingDynamicsScorer):
    """``‖softmax(f(x)) − onehot(y)‖₂`` averaged over briefly trained networks."""

    name = "el2n"

    def score(self, model, images, labels) -> torch.Tensor:
        probabilities = predict(model, images, batch_size=self.score_batch_size).softmax(1)
        return (probabilities - F.one_hot(labels, probabilities.shape[1]).float()).norm(dim=1)


class GraNd(_TrainingDynamicsScorer):
    """``‖∇_θ CE(f(x), y)‖₂`` per sample over all parameters (``torch.func`` vmap of the gradient)."""

    name = "grand"

    def score(self, model, images, labels) -> torch.Tensor:
        from torch.func import functional_call, grad, vmap

        model.eval()  # per-sample gradients: batch-norm networks use their running statistics
        params = {k: v.detach() for k, v in model.named_parameters()}
        buffers = {k: v.detach() for k, v in model.named_buffers()}

        def loss(p, x, y):
            logits = functional_call(model, (p, buffers), (x.unsqueeze(0),))
            return F.cross_entropy(logits.float(), y.unsqueeze(0))

        per_sample = vmap(grad(loss), in_dims=(None, 0, 0))
        norms = []
        for start in range(0, len(images), self.score_batch_size):
            grads = per_sample(params, images[start:start + self.score_batch_size],
                               labels[start:start + self.score_batch_size])
            norms.append(torch.stack([g.flatten(1).square().sum(1) for g in grads.values()]).sum(0).sqrt())
        return torch.cat(norms)
