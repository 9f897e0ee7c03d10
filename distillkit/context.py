"""The run's context: what every stage is handed besides its own settings."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch
from omegaconf import DictConfig

from distillkit.cache import Cache
from distillkit.config import model_config
from distillkit.data.datasets import RealData, dataset_identity
from distillkit.errors import SealedTestSetError
from distillkit.models import create_model
from distillkit.roles import Roles


def build_model(model_cfg, data: RealData, device: torch.device) -> torch.nn.Module:
    """A fresh network for ``data`` from a model config (or a model name), on ``device``."""
    cfg = model_config(model_cfg)
    kwargs = {k: v for k, v in cfg.items() if k not in ("_target_", "name")}
    return create_model(cfg.name, data.channels, data.num_classes, data.image_size, **kwargs).to(device)


class OnDevice:
    """A tensor of ``ctx.data`` of the same name, copied to ``ctx.device`` at the first read and kept."""

    def __set_name__(self, owner, name: str) -> None:
        self.name = name

    def __get__(self, ctx, owner=None):
        if ctx is None:
            return self
        ctx.__dict__[self.name] = value = getattr(ctx.data, self.name).to(ctx.device)  # later reads skip this
        return value


class Sealed(OnDevice):
    """A test-split tensor: readable only inside :meth:`Context.final_evaluation`, so no stage can select on
    the test set by accident; a read anywhere else raises :class:`SealedTestSetError`."""

    def __get__(self, ctx, owner=None):
        if ctx is None:
            return self
        if not ctx.test_readers:
            raise SealedTestSetError(f"ctx.{self.name} read outside the final evaluation: only an evaluator's "
                                     "final test (or evaluator.checkpoint=best_test, by name) may read the test set")
        cached = ctx.__dict__.setdefault("sealed", {})
        if self.name not in cached:
            cached[self.name] = getattr(ctx.data, self.name).to(ctx.device)
        return cached[self.name]

    def __set__(self, ctx, value) -> None:  # a data descriptor: an instance attribute cannot shadow the seal
        raise AttributeError(f"ctx.{self.name} is read-only")


@dataclass
class Split:
    """The training data split for trained roles: what they train on, and the held-out part (never trained
    on by a role) that measures them. Tensors on the run's device."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    held_out_images: torch.Tensor
    held_out_labels: torch.Tensor


@dataclass
class Context:
    """What every stage may use.

    ``cfg`` is the composed config (stages read their own settings from their constructor, not from
    here); ``data`` the real train/test split on the CPU, with ``train_images`` & co. its copies on
    ``device``, made on first use; ``run_dir`` the run's folder (None: write no artefacts); ``cache``
    the shared cache; ``tracker`` W&B or nothing; ``roles`` the trained networks, asked for by name
    with :meth:`role`; ``split`` the training data divided for trained roles (:class:`Split`), whose
    held-out part is also what an evaluator selects on (``checkpoint: best_val``, ``lr_grid``). The test
    split is sealed: ``test_images`` / ``test_labels`` raise unless read inside :meth:`final_evaluation`.
    """

    cfg: DictConfig
    data: RealData
    device: torch.device
    run_dir: Path | None
    cache: Cache
    tracker: object
    roles: Roles
    test_readers: list[str] = field(default_factory=list, init=False, repr=False)  # who holds the test set open
    test_reads: list[str] = field(default_factory=list, init=False, repr=False)  # every opening, in order

    @property
    def ipc(self) -> int:
        return int(self.cfg.ipc)

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @cached_property
    def dataset_identity(self) -> dict:
        """Every dataset setting that changes which images the run sees (cache keys, set metadata)."""
        return dataset_identity(self.cfg.dataset)

    # the real data's tensors, copied to the device on first use; the test split's only in the final evaluation
    train_images, train_labels = OnDevice(), OnDevice()
    test_images, test_labels = Sealed(), Sealed()

    @contextmanager
    def final_evaluation(self, reader: str):
        """Open the test split to ``reader`` (an evaluator's final test, or best_test selection) for the block."""
        self.test_readers.append(reader)
        self.test_reads.append(reader)
        try:
            yield
        finally:
            self.test_readers.pop()

    @cached_property
    def split(self) -> Split:
        """``validation.fraction`` of every class held out of the training data (seed ``validation.seed``):
        trained roles learn from the rest and are measured on it. The test split stays the evaluators'."""
        from distillkit.selection import held_out

        settings = self.cfg.validation
        kept, held = held_out(self.data.train_labels, self.data.num_classes, float(settings.fraction),
                              int(settings.seed))
        kept, held = kept.to(self.device), held.to(self.device)
        return Split(self.train_images[kept], self.train_labels[kept], self.train_images[held],
                     self.train_labels[held])

    def build_model(self, model_cfg) -> torch.nn.Module:
        return build_model(model_cfg, self.data, self.device)

    def role(self, name: str):
        """The trained role ``name`` (``teacher``, ``experts``, ``diffusion``, ``student``): see distillkit.roles."""
        return self.roles.get(name, self)
