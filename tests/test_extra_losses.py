"""The diffusion training's extra-loss hook (``train_denoiser(..., extra_losses=...)``): an extra loss sees
every step's batch, trains its own parameters with the denoiser, changes the UNet, and is checkpointed."""

from __future__ import annotations

import copy

import pytest
import torch

from distillkit.checkpoint import Checkpoint
from distillkit.diffusion.training import CHECKPOINT_FILE, DenoisingBatch, train_denoiser
from support import tiny_context, unet_training_inputs

FIELDS = ("clean", "noisy", "timesteps", "labels", "noise", "prediction", "indices")


class ScaledPenalty(torch.nn.Module):
    """``scale × mean(ε_θ²)`` with a learnable scale; records the shapes of every batch it is handed."""

    def __init__(self, weight: float = 0.5):
        super().__init__()
        self.weight = weight
        self.scale = torch.nn.Parameter(torch.tensor(1.0))
        self.seen: list[dict] = []

    def forward(self, batch: DenoisingBatch) -> torch.Tensor:
        assert isinstance(batch, DenoisingBatch)
        self.seen.append({"model": batch.model, **{name: tuple(getattr(batch, name).shape) for name in FIELDS}})
        return self.scale * batch.prediction.float().square().mean()


def setup(tmp_path, **changes):
    ctx = tiny_context(tmp_path, "method=dgs", "ipc=1")
    unet, pixels, train = unet_training_inputs(ctx)
    # no warm-up: the extra parameter moves visibly within a few steps
    return ctx, unet, pixels, {**train, "warmup_steps": 1, **changes}


def trained(unet, pixels, ctx, train, folder, extra=()):
    """A copy of ``unet`` trained in ``folder`` (the same initial weights every time), fp32."""
    model = copy.deepcopy(unet)
    train_denoiser(model, pixels, ctx.train_labels, ctx.data.num_classes, train, folder, 0, False, list(extra))
    return model


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_an_extra_loss_sees_every_step_trains_its_parameter_and_changes_the_unet(tmp_path):
    ctx, unet, pixels, train = setup(tmp_path, steps=3, checkpoint_every=3)
    plain = trained(unet, pixels, ctx, train, tmp_path / "plain")
    assert same_weights(plain, trained(unet, pixels, ctx, train, tmp_path / "again"))  # deterministic without it

    penalty = ScaledPenalty()
    model = copy.deepcopy(unet)
    train_denoiser(model, pixels, ctx.train_labels, 10, train, tmp_path / "extra", 0, False, [penalty])
    batch = min(train["batch_size"], len(pixels))
    image = tuple(pixels.shape[1:])
    assert len(penalty.seen) == 3  # once a step
    for seen in penalty.seen:
        assert seen["model"] is model
        assert seen["clean"] == seen["noisy"] == seen["noise"] == seen["prediction"] == (batch, *image)
        assert seen["timesteps"] == seen["labels"] == seen["indices"] == (batch,)
    assert penalty.scale.grad is not None and penalty.scale.grad.abs() > 0
    assert penalty.scale.item() < 1.0  # d loss / d scale = mean(ε_θ²) > 0: the optimiser lowers it
    assert not same_weights(model, plain)

    # the weight scales the loss: at 0 the UNet trains as without it
    assert same_weights(trained(unet, pixels, ctx, train, tmp_path / "zero", [ScaledPenalty(weight=0.0)]), plain)


def test_training_with_an_extra_loss_resumes_to_the_same_weights(tmp_path, monkeypatch):
    ctx, unet, pixels, train = setup(tmp_path, steps=4, checkpoint_every=2)
    straight = ScaledPenalty()
    whole = trained(unet, pixels, ctx, train, tmp_path / "a", [straight])

    save = Checkpoint.save

    def save_then_interrupt(self, position, state):
        save(self, position, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        trained(unet, pixels, ctx, train, tmp_path / "b", [ScaledPenalty()])
    saved = torch.load(tmp_path / "b" / CHECKPOINT_FILE, weights_only=True)
    assert saved["position"] == 2 and saved["state"]["extra_losses"][0]["scale"] != 1.0

    monkeypatch.setattr(Checkpoint, "save", save)
    resumed = ScaledPenalty()  # a fresh loss (scale 1): only the checkpoint can bring its trained scale back
    model = trained(unet, pixels, ctx, train, tmp_path / "b", [resumed])
    assert len(resumed.seen) == 2  # steps 3 and 4
    assert torch.equal(resumed.scale, straight.scale)
    assert same_weights(model, whole)
