"""Fixtures every test gets: an isolated cache, no progress bars, offline W&B, two CPU threads.
Helpers to import live in ``support.py``."""

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
