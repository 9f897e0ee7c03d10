"""Roles: training one never moves the global random state (a run is the same whether its teacher came
from the cache or was trained on the spot), and ``roles.teacher.weights`` loads a state dict instead of
training — or stops the run with one line."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from distillkit.data.synthetic import SyntheticSet
from distillkit.errors import UserError
from distillkit.roles.classifier import TrainedClassifier
from distillkit.run import execute
from distillkit.schedules.rounds import CHECKPOINT_NAME
from support import ROUNDS, TINY, compose, tiny_context


def global_random_state() -> tuple:
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


@pytest.mark.parametrize("name", sorted(compose(*TINY).roles))
def test_training_and_loading_a_role_leave_the_global_random_state_where_it_was(name, tmp_path):
    cache = tmp_path / "cache"
    ctx = tiny_context(tmp_path, "ipc=2", f"cache.dir={cache}")  # an empty cache: the role trains here
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    before = global_random_state()
    assert ctx.role(name) is not None
    after = global_random_state()
    assert torch.equal(before[0], after[0]) and np.array_equal(before[1], after[1]) and before[2] == after[2]
    kind = ctx.roles.role(name).kind
    assert name == "student" or list((cache / kind).glob("*/spec.json")), f"{name} should have been trained"


def test_a_run_is_the_same_whether_its_teacher_came_from_the_cache_or_was_trained(tmp_path, monkeypatch):
    """A rounds run whose learner augments its batches (DSA draws from the global RNG after the roles are
    ready) and whose sampler embeds with the teacher (herding): trained in the run, or read from the cache,
    the teacher leaves the same buffer, learner and accuracy."""
    args = (*TINY, *ROUNDS, "sampler=herding", "learner.dsa_strategy=color_crop_cutout_flip_scale_rotate",
            "schedule.rounds=2", "schedule.steps_per_round=3", f"cache.dir={tmp_path / 'cache'}")
    trains = execute(compose(*args), tmp_path / "trains")

    def no_training(*args, **kwargs):
        raise AssertionError("the teacher should come from the cache")

    monkeypatch.setattr(TrainedClassifier, "train", no_training)
    reads = execute(compose(*args), tmp_path / "reads")
    assert trains["accuracy"] == reads["accuracy"]
    a, b = (SyntheticSet.load(tmp_path / d / "distilled.safetensors") for d in ("trains", "reads"))
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    learner_a, learner_b = (torch.load(tmp_path / d / CHECKPOINT_NAME, weights_only=True)["state"]["stages"]["learner"]
                            ["model"] for d in ("trains", "reads"))
    assert all(torch.equal(learner_a[k], learner_b[k]) for k in learner_a)


def saved_weights(ctx, path, **model):
    """A ConvNet's state dict (seeded, untrained) written to ``path``; the state."""
    torch.manual_seed(7)
    state = {k: v.contiguous() for k, v in ctx.build_model({"name": "convnet", **model}).state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    return state


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_named_teacher_weights_are_loaded_without_training(suffix, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    path = tmp_path / f"teacher{suffix}"
    state = saved_weights(tiny_context(None), path)

    def no_training(*args, **kwargs):
        raise AssertionError("a teacher with named weights is never trained")

    monkeypatch.setattr(TrainedClassifier, "train", no_training)
    args = (*TINY, "method=herding", "ipc=2", f"cache.dir={cache}", f"roles.teacher.weights={path}")
    results = execute(compose(*args), tmp_path / "run")
    teacher_report = results["roles"]["teacher"]
    assert results["status"] == "evaluated" and teacher_report["weights"] == str(path)
    assert "steps" not in teacher_report and 0 <= teacher_report["held_out_accuracy"] <= 100  # checked, not trained
    assert not cache.exists() or not any(cache.rglob("spec.json"))  # nothing trained, nothing cached

    ctx = tiny_context(None, "method=herding", f"roles.teacher.weights={path}")
    teacher = ctx.role("teacher")
    assert all(torch.equal(v, state[k]) for k, v in teacher.state_dict().items())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_a_missing_or_mismatched_teacher_file_is_one_line_before_any_stage_works(tmp_path):
    mismatched = tmp_path / "narrow.safetensors"
    saved_weights(tiny_context(None), mismatched, width=16)  # the teacher is a 128-wide ConvNet
    cases = [(tmp_path / "missing.safetensors", "roles.teacher.weights: no such file"),
             (mismatched, "roles.teacher.weights: .* does not fit model 'convnet'")]
    for path, message in cases:
        run_dir = tmp_path / path.stem
        with pytest.raises(UserError, match=message) as raised:
            execute(compose(*TINY, "method=herding", "ipc=2", f"roles.teacher.weights={path}"), run_dir)
        assert "\n" not in str(raised.value)
        assert not (run_dir / "distilled.safetensors").exists() and not (run_dir / "results.json").exists()
