"""Shared fixtures: an isolated cache, no progress bars, offline W&B, and config composition."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("DISTILLKIT_PROGRESS", "0")
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("DISTILLKIT_CACHE", str(cache))
    return cache


def compose(*overrides: str):
    """The real config with ``overrides``, as ``distillkit run`` would compose it."""
    from distillkit.cli import compose_config

    return compose_config(list(overrides))


# Small, real runs: digits with 30 training images per class, 3 evaluation epochs, no tracker.
TINY = ("budget=smoke", "tracker=none", "dataset=digits", "dataset.train_per_class=30", "dataset.test_per_class=20")
