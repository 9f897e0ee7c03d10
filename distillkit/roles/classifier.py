"""Classifier roles: a network trained on the real training set (the teacher, a scorer's briefly trained
networks), or loaded from weights the user names; and the fresh student a ``rounds`` learner trains."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from distillkit.config import model_config
from distillkit.data.augment import DSA
from distillkit.errors import UserError
from distillkit.models import ModelSpec
from distillkit.roles import Role, forked_rng
from distillkit.training import TrainSpec, optimiser_steps, precision, predict, train_classifier, train_settings
from distillkit.validation import Int, NonNegativeFloat, plain, validated

log = logging.getLogger("distillkit")

WEIGHTS_FILE = "model.safetensors"


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in eval mode without gradients: a role is read, never trained, by the stages."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def held_out_quality(model: torch.nn.Module, ctx) -> dict:
    """A classifier's accuracy (%) and cross-entropy on the held-out part of the training data, with chance
    beside them (a high accuracy with a cross-entropy near ln K is a right but unsure classifier)."""
    split = ctx.split
    logits = predict(model, split.held_out_images)
    return {"held_out_accuracy": round(100.0 * (logits.argmax(1) == split.held_out_labels).float().mean().item(), 2),
            "held_out_cross_entropy": round(F.cross_entropy(logits, split.held_out_labels).item(), 4),
            "held_out_images": len(split.held_out_labels), "chance": round(100.0 / ctx.data.num_classes, 2)}


def accuracy_shortfall(what: str, value: float, times_chance: float, chance: float) -> str | None:
    """``what`` is below ``times_chance`` × chance accuracy: say so, or None."""
    floor = times_chance * chance
    if value < floor:
        return f"{what} {value:.1f} % is below its floor {floor:.1f} % ({times_chance:g} × chance)"
    return None


class TrainedClassifier(Role):
    """A classifier trained on the real training data (less the held-out part), cached
    (``conf/role/classifier.yaml``), and measured on the held-out part.

    ``weights``: ``null`` trains it; ``pretrained`` takes the model config's own pretrained weights
    (a timm model with ``pretrained: true``) untrained; a path loads a state dict (``.safetensors``, or
    ``.pt`` read with ``weights_only=True``) into the configured model. ``quality_floor``: the lowest
    held-out accuracy it may have, in multiples of chance (0: no floor).
    """

    kind = "classifier"
    steps_keys = ("train.min_steps", "train.epochs")  # below ``key``: what trains it longer

    @validated
    def __init__(self, model: ModelSpec, train: TrainSpec, seed: Int = 0,
                 dsa_strategy: str | None = "color_crop_cutout_flip_scale_rotate", weights: str | None = None,
                 quality_floor: NonNegativeFloat = 2.0, accept_below_floor: bool = False, name: str = "teacher"):
        self.model, self.train_spec, self.seed, self.name = plain(model), train, seed, name
        self.dsa_strategy = dsa_strategy if dsa_strategy and dsa_strategy != "none" else None
        self.weights, self.quality_floor, self.accept_below_floor = weights, quality_floor, accept_below_floor

    def settings(self, ctx) -> dict:
        return {"model": plain(model_config(self.model)), "train": train_settings(self.train_spec), "seed": self.seed,
                "dsa_strategy": self.dsa_strategy}

    def precision(self, ctx) -> str:
        return precision(ctx.device, self.train_spec.amp, self.train_spec.amp_on_cpu)

    def train(self, ctx, folder: Path) -> dict:
        from safetensors.torch import save_file

        split = ctx.split
        steps = optimiser_steps(self.train_spec, len(split.train_labels)) if self.train_spec.epochs else 0
        log.info("training %s %s on %s (%d steps); cached for later runs", self.name, model_config(self.model).name,
                 ctx.data.name, steps)
        torch.manual_seed(self.seed)
        model = ctx.build_model(self.model)
        if steps:
            augment = DSA(self.dsa_strategy, seed=self.seed) if self.dsa_strategy else None
            train_classifier(model, split.train_images, split.train_labels, self.train_spec, augment=augment,
                             desc=self.name)
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                  str(folder / WEIGHTS_FILE))
        return {**held_out_quality(model, ctx), "steps": steps, "trained_on": len(split.train_labels)}

    def shortfall(self, quality: dict) -> str | None:
        return accuracy_shortfall("held-out accuracy", quality["held_out_accuracy"], self.quality_floor,
                                  quality["chance"])

    def remedy(self, quality: dict) -> str:
        steps = f", now {quality['steps']} steps" if "steps" in quality else ""
        return f"train it longer ({' or '.join(f'{self.key}.{k}' for k in self.steps_keys)}{steps})"

    def describe(self, quality: dict) -> str:
        how = f"{quality['steps']} steps on {quality['trained_on']} images" if "steps" in quality else quality.get(
            "weights", "")
        entropy = (f", cross-entropy {quality['held_out_cross_entropy']:.3f}"
                   if "held_out_cross_entropy" in quality else "")
        return (f"held-out accuracy {quality['held_out_accuracy']:.1f} %{entropy} on {quality['held_out_images']} "
                f"images ({how}; floor {self.quality_floor * quality['chance']:.1f} %)")

    def load(self, ctx, folder: Path) -> torch.nn.Module:
        from safetensors.torch import load_file

        model = ctx.build_model(self.model)
        model.load_state_dict(load_file(str(folder / WEIGHTS_FILE), device=str(ctx.device)))
        return frozen(model)

    def prepare(self, ctx) -> Path | None:
        if self.weights is None:
            return super().prepare(ctx)
        self.named_weights(ctx)  # nothing to train or cache; a missing or mismatched file stops the run here
        return None

    def materialise(self, ctx):
        if self.weights is None:
            return super().materialise(ctx)
        model = self.named_weights(ctx)
        return frozen(model), {**held_out_quality(model, ctx), "weights": self.weights}

    def named_weights(self, ctx) -> torch.nn.Module:
        """The configured model with the weights the user named (no training, no cache)."""
        with forked_rng(ctx):
            model = ctx.build_model(self.model)
        if self.weights == "pretrained":
            return model
        path = Path(self.weights).expanduser()
        if not path.is_file():
            raise UserError(f"{self.key}.weights: no such file {path}")
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file
                state = load_file(str(path), device=str(ctx.device))
            else:
                state = torch.load(path, map_location=ctx.device, weights_only=True)
            model.load_state_dict(state)
        except Exception as err:  # a foreign or mismatched checkpoint: say which, not a traceback
            raise UserError(f"{self.key}.weights: {path} does not fit model "
                            f"'{model_config(self.model).name}' ({str(err).splitlines()[0]})") from None
        return model


class FreshNetwork(Role):
    """An untrained network of the configured model: the student a ``rounds`` learner trains."""

    kind = "fresh"

    @validated
    def __init__(self, model: ModelSpec, seed: Int = 0):
        self.model, self.seed = plain(model), seed

    def prepare(self, ctx) -> None:
        """Nothing to train or cache: the network is drawn when it is asked for."""
        return None

    def materialise(self, ctx):
        with forked_rng(ctx):
            torch.manual_seed(self.seed)
            return ctx.build_model(self.model), {}
