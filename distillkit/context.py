"""What every stage may use: the config, the real data on the device, the cache, the tracker,
and the trained role models (the teacher), built lazily and cached by config hash."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from distillkit.cache import Cache
from distillkit.config import model_config
from distillkit.data.augment import DSA
from distillkit.data.datasets import RealData, dataset_identity
from distillkit.models import create_model
from distillkit.training import TrainSpec, train_classifier

log = logging.getLogger("distillkit")


def build_model(model_cfg, data: RealData, device: torch.device) -> torch.nn.Module:
    """A fresh network for ``data`` from a model config (or a model name), on ``device``."""
    cfg = model_config(model_cfg)
    kwargs = {k: v for k, v in cfg.items() if k not in ("_target_", "name")}
    return create_model(cfg.name, data.channels, data.num_classes, data.image_size, **kwargs).to(device)


def seeded(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


@dataclass
class Context:
    cfg: DictConfig
    data: RealData
    device: torch.device
    run_dir: Path
    cache: Cache
    tracker: object
    timings: dict = field(default_factory=dict)

    @property
    def ipc(self) -> int:
        return int(self.cfg.ipc)

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @cached_property
    def train_images(self) -> torch.Tensor:
        return self.data.train_images.to(self.device)

    @cached_property
    def train_labels(self) -> torch.Tensor:
        return self.data.train_labels.to(self.device)

    @cached_property
    def test_images(self) -> torch.Tensor:
        return self.data.test_images.to(self.device)

    @cached_property
    def test_labels(self) -> torch.Tensor:
        return self.data.test_labels.to(self.device)

    def build_model(self, model_cfg) -> torch.nn.Module:
        return build_model(model_cfg, self.data, self.device)

    @cached_property
    def teacher_spec(self) -> dict:
        """What identifies the trained teacher (its cache key; part of the key of anything it computes)."""
        role = self.cfg.teacher
        return {"dataset": dataset_identity(self.cfg.dataset),
                "model": OmegaConf.to_container(model_config(role.model)),
                "train": OmegaConf.to_container(role.train, resolve=True), "seed": int(role.seed)}

    @cached_property
    def teacher(self) -> torch.nn.Module:
        """The ``teacher`` role: trained on the real training set once, then read from the cache."""
        role = self.cfg.teacher

        def build(folder: Path) -> None:
            from safetensors.torch import save_file

            log.info("training teacher %s on %s (%d epochs); cached for later runs", role.model.name,
                     self.data.name, role.train.epochs)
            torch.manual_seed(int(role.seed))
            model = self.build_model(role.model)
            augment = DSA(role.dsa_strategy, seed=int(role.seed)) if role.dsa_strategy else None
            train_classifier(model, self.train_images, self.train_labels, TrainSpec(**role.train),
                             augment=augment, desc="teacher")
            save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                      str(folder / "model.safetensors"))

        from safetensors.torch import load_file

        folder = self.cache.get_or_create("teacher", self.teacher_spec, build)
        model = self.build_model(role.model)
        model.load_state_dict(load_file(str(folder / "model.safetensors"), device=str(self.device)))
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model
