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

from distillkit.data.augment import DSA
from distillkit.errors import UserError
from distillkit.progress import progress
from distillkit.training import TrainSpec, predict, spec_identity, train_classifier

log = logging.getLogger("distillkit")


class _TrainingDynamicsScorer:
    name = ""

    def __init__(self, model="convnet", num_models: int = 4, epochs: int = 10, lr: float = 0.01,
                 batch_size: int = 256, momentum: float = 0.9, weight_decay: float = 5e-4,
                 dsa_strategy: str = "color_crop_cutout_flip_scale_rotate", seed: int = 0,
                 score_batch_size: int = 512, amp: bool = True):
        if int(num_models) < 1 or int(epochs) < 0:
            raise UserError(f"scorer.num_models must be at least 1 and scorer.epochs at least 0 "
                            f"(got {num_models}, {epochs})")
        self.model, self.num_models, self.epochs, self.seed = model, int(num_models), int(epochs), int(seed)
        self.spec = TrainSpec(epochs=max(1, int(epochs)), lr=float(lr), batch_size=int(batch_size),
                              momentum=float(momentum), weight_decay=float(weight_decay), schedule="constant",
                              amp=bool(amp), amp_on_cpu=True)
        self.dsa_strategy = dsa_strategy if dsa_strategy and dsa_strategy != "none" else None
        self.score_batch_size = int(score_batch_size)

    def settings(self, device: torch.device) -> dict:
        """What changes the scores on ``device`` (part of the cache key of anything trained on them)."""
        from omegaconf import OmegaConf

        from distillkit.config import model_config

        return {"scorer": self.name, "model": OmegaConf.to_container(model_config(self.model), resolve=True),
                "num_models": self.num_models, "epochs": self.epochs, "train": spec_identity(self.spec, device),
                "dsa_strategy": self.dsa_strategy, "seed": self.seed}

    def __call__(self, pool, ctx) -> torch.Tensor:
        """One score per pool sample (the pool may be the real training set), averaged over the networks."""
        images, labels = pool.images.to(ctx.device), pool.labels.to(ctx.device)
        total = torch.zeros(len(labels), device=ctx.device)
        for k in progress(range(self.num_models), desc=f"{self.name} scores", leave=False):
            with torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else []):
                torch.manual_seed(self.seed + k)
                model = ctx.build_model(self.model)
                if self.epochs > 0:
                    augment = DSA(self.dsa_strategy, seed=self.seed + k) if self.dsa_strategy else None
                    train_classifier(model, ctx.train_images, ctx.train_labels, self.spec, augment=augment,
                                     desc=f"{self.name} network {k}")
            total += self.score(model, images, labels)
        return total / self.num_models

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
