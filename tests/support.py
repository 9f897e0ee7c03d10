"""What the tests share besides fixtures: the real config shrunk to tiny runs, and two contexts —
a real one on tiny digits, and a stub for unit tests of a single stage."""

from __future__ import annotations

import os
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch

from distillkit.cache import Cache
from distillkit.data.synthetic import SyntheticSet
from distillkit.roles import Role, Roles
from distillkit.tracking import NoTracker

ROOT = Path(__file__).resolve().parents[1]  # the checkout: its docs, scripts and committed benchmark records


def load_script(name: str, monkeypatch) -> types.ModuleType:
    """``scripts/<name>.py`` imported as the module ``name`` for the test (a dataclass there looks its module up in
    ``sys.modules``, so it is registered, and removed again by ``monkeypatch``)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, script)
    spec.loader.exec_module(script)
    return script

# Small, real runs: digits with 30 training images per class, 3 evaluation epochs, no tracker.
TINY = ("budget=smoke", "tracker=none", "dataset=digits", "dataset.train_per_class=30", "dataset.test_per_class=20")

# A tiny method on the rounds schedule (no shipped method uses it yet): 3 real images per class a round
# into a buffer of 60 (full after two rounds); every learner step trains on ipc=3 images per class
# drawn from the buffer; a 32-wide ConvNet student learns digits in 80 steps. Add schedule.rounds and
# schedule.steps_per_round.
ROUNDS = ("method.name=rounds_real", "schedule=rounds", "generator=real_batches", "scorer=none", "sampler=random",
          "learner=classifier", "ipc=3", "generator.per_class=3", "schedule.buffer_size=60", "learner.lr=0.05",
          "roles.student.model.width=32")


def distillkit(*args: str, cwd=None, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m distillkit ARGS`` in a subprocess, without progress bars; its exit code and output."""
    env = {**os.environ, "DISTILLKIT_PROGRESS": "0", **(env or {})}
    return subprocess.run([sys.executable, "-m", "distillkit", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=600, check=False)


def compose(*overrides: str, with_hydra: bool = False):
    """The real config with ``overrides``, as ``distillkit run`` would compose it (``with_hydra``: and its
    ``hydra`` node)."""
    from distillkit.cli import compose_config

    return compose_config(list(overrides), with_hydra=with_hydra)


def tiny_context(run_dir: Path | None, *overrides: str):
    """A real :class:`~distillkit.context.Context` for the composed ``TINY`` config plus ``overrides``."""
    from distillkit.run import make_context, plan

    cfg = compose(*TINY, *overrides)
    return make_context(cfg, run_dir, plan(cfg).roles, NoTracker())


def conv_output_dtypes(work) -> set[torch.dtype]:
    """The dtypes every Conv2d produced while ``work()`` ran."""
    seen = set()

    def record(module, args, output):
        if isinstance(module, torch.nn.Conv2d) and isinstance(output, torch.Tensor):
            seen.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        work()
    finally:
        handle.remove()
    return seen


def first_per_class(ctx, ipc: int) -> SyntheticSet:
    """The first ``ipc`` training images of every class (the same set on every device)."""
    labels = ctx.data.train_labels
    keep = torch.cat([torch.nonzero(labels == c).flatten()[:ipc] for c in range(ctx.data.num_classes)])
    return SyntheticSet(ctx.data.train_images[keep].clone(), labels[keep].clone())


def unet_training_inputs(ctx):
    """A UNet of the context's diffusion role settings, the real images as its pixels, and its training settings."""
    from omegaconf import OmegaConf

    from distillkit.diffusion.denoisers import build_unet
    from distillkit.diffusion.pixels import to_model_space

    train = OmegaConf.to_container(ctx.cfg.roles.diffusion.train, resolve=True)
    unet = build_unet(OmegaConf.to_container(ctx.cfg.roles.diffusion.unet, resolve=True), ctx.data.channels,
                      ctx.data.num_classes, ctx.data.image_size)
    pixels = to_model_space(ctx.train_images, ctx.data)
    return unet, pixels, train


def tiny_dit_pipeline():
    """Random DiT + VAE + DDIM, the size of diffusers' own pipeline tests (no hub download)."""
    from diffusers import AutoencoderKL, DDIMScheduler, DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(sample_size=16, num_layers=2, patch_size=4, attention_head_dim=8,
                                        num_attention_heads=2, in_channels=4, out_channels=8,
                                        activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
                                        norm_type="ada_norm_zero", norm_elementwise_affine=False)
    return DiTPipeline(transformer=transformer, vae=AutoencoderKL(), scheduler=DDIMScheduler())


class StubRole(Role):
    """A role that is a given object: ``settings`` stand for what made it (its cache key)."""

    def __init__(self, value, settings: dict | None = None):
        self.value, self.stub_settings = value, dict(settings or {"stub": True})

    def settings(self, ctx) -> dict:
        return self.stub_settings

    def precision(self, ctx) -> str:
        return "fp32"

    def materialise(self, ctx):
        return self.value, {}


@dataclass
class StubContext:
    """Just what a single sampler or scorer reads: ipc, seed, classes, an optional run folder, roles."""

    ipc: int
    num_classes: int = 2
    seed: int = 0
    run_dir: Path | None = None
    cache_dir: Path | None = None
    train_images: torch.Tensor | None = None
    train_labels: torch.Tensor | None = None
    role_values: dict = field(default_factory=dict)

    def __post_init__(self):
        self.device = torch.device("cpu")
        self.tracker = NoTracker()
        self.data = types.SimpleNamespace(num_classes=self.num_classes,
                                          classes=[f"c{i}" for i in range(self.num_classes)])
        self.dataset_identity = {"name": "stub"}
        self.cache = Cache(self.cache_dir or Path("/nonexistent"), enabled=self.cache_dir is not None)
        self.roles = Roles({})
        self.roles.roles.update({name: StubRole(value) for name, value in self.role_values.items()})

    def role(self, name: str):
        return self.roles.get(name, self)



def interrupted_after_round(monkeypatch, position: int, run) -> None:
    """``run()`` stopped by a KeyboardInterrupt right after the ``rounds`` checkpoint of round ``position`` is
    written (as a user's Ctrl-C there would); checkpoints are saved normally again afterwards."""
    import pytest

    from distillkit.checkpoint import Checkpoint

    save = Checkpoint.save

    def save_then_interrupt(self, at, state):
        save(self, at, state)
        if self.kind == "rounds" and at == position:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run()
    monkeypatch.setattr(Checkpoint, "save", save)
