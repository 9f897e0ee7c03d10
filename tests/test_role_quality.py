"""Trained roles prove they are good enough: the held-out split, step floors that scale with the data,
quality measured and reported, and the one-line stop below a floor (issue: trained roles)."""

from __future__ import annotations

import json

import pytest
import torch

from distillkit.errors import UserError
from distillkit.run import execute
from distillkit.selection import held_out
from distillkit.training import TrainSpec, optimiser_steps
from support import TINY, compose, distillkit


def test_held_out_split_is_stratified_disjoint_and_seeded():
    labels = torch.tensor([0] * 30 + [1] * 10 + [2] * 2)
    kept, held = held_out(labels, 3, 0.1, seed=0)
    assert set(kept.tolist()).isdisjoint(held.tolist()) and len(kept) + len(held) == len(labels)
    assert torch.bincount(labels[held], minlength=3).tolist() == [3, 1, 1]  # at least one of each class
    assert torch.equal(held, held_out(labels, 3, 0.1, seed=0)[1])
    assert not torch.equal(held, held_out(labels, 3, 0.1, seed=1)[1])


def test_a_step_floor_adds_epochs_on_a_small_dataset_only():
    spec = TrainSpec(epochs=1, batch_size=256, min_steps=200)
    assert optimiser_steps(spec, 1212) == 200  # digits: 5 steps per pass, so 40 passes
    assert optimiser_steps(spec, 54000) == 211  # Fashion-MNIST: one pass is more than the floor
    assert optimiser_steps(TrainSpec(epochs=2, batch_size=256, min_steps=7), 1212) == 10


def test_a_run_reports_each_role_it_used(tmp_path):
    results = execute(compose(*TINY, "method=dgs", "ipc=1"), tmp_path)
    teacher, diffusion = results["roles"]["teacher"], results["roles"]["diffusion"]
    assert 0 <= teacher["held_out_accuracy"] <= 100 and teacher["held_out_images"] == 30 and teacher["chance"] == 10
    assert teacher["trained_on"] == 270 and teacher["steps"] >= 1 and teacher["held_out_cross_entropy"] > 0
    assert diffusion["held_out_loss"] > 0 and diffusion["train_loss"] > 0 and diffusion["held_out_images"] == 30


def test_a_job_that_only_prepares_a_role_reports_and_checks_it(tmp_path):
    """A teacher (or all experts) trained ahead in its own job says how good it is there, not only later."""
    results = execute(compose(*TINY, "method=herding", "ipc=1", "schedule.stop_after=prepare"), tmp_path / "prepared")
    assert results["status"] == "prepared" and results["roles"]["teacher"]["trained_on"] == 270
    shard = execute(compose(*TINY, "method=mtt", "roles.experts.shard.index=1", "roles.experts.shard.count=2",
                            "schedule.stop_after=prepare"), tmp_path / "shard")
    assert shard["status"] == "prepared" and "experts" not in shard["roles"]  # half the experts: no verdict yet


UNTRAINED_TEACHER = (*TINY, "method=herding", "budget.teacher_epochs=0", "roles.teacher.quality_floor=5")


def test_an_untrained_teacher_stops_the_run_before_any_stage(tmp_path):
    out = distillkit("run", *UNTRAINED_TEACHER, f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("distillkit: error: role teacher: held-out accuracy ") and "below its floor 50.0 %" in line
    assert "roles.teacher.train.min_steps" in line and "now 0 steps" in line and "accept_below_floor=true" in line
    assert not (tmp_path / "distilled.safetensors").exists() and not (tmp_path / "results.json").exists()


def test_accepting_a_teacher_below_its_floor_goes_on_and_says_so(tmp_path):
    out = distillkit("run", *UNTRAINED_TEACHER, "roles.teacher.accept_below_floor=true", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    teacher = json.loads((tmp_path / "results.json").read_text())["roles"]["teacher"]
    assert teacher["below_floor"] is True and "accept_below_floor" in teacher["warning"]
    assert "role teacher: held-out accuracy" in out.stdout  # the summary line


@pytest.mark.parametrize("method, override, message", [
    ("dgs", "roles.diffusion.max_held_out_loss=0.001",
     r"role diffusion: held-out denoising loss \S+ is not below its ceiling 0.001 .*\(roles.diffusion.train.steps, now 4\)"
     r".*roles.diffusion.accept_below_floor=true"),
    ("mtt", "roles.experts.quality_floor=9",
     r"role experts: the lowest expert's held-out accuracy .* below its floor 90.0 % .*roles.experts.min_steps_per_epoch"
     r".*roles.experts.accept_below_floor=true"),
    ("pad", "roles.experts.curriculum.scorer.quality_floor=9",
     r"role el2n network 0: held-out accuracy .* below its floor 90.0 % .*roles.experts.curriculum.scorer.min_steps"
     r".*roles.experts.curriculum.scorer.accept_below_floor=true"),
], ids=["diffusion", "experts", "el2n"])
def test_every_other_trained_role_below_its_floor_stops_the_run(method, override, message, tmp_path):
    with pytest.raises(UserError, match=message):
        execute(compose(*TINY, f"method={method}", "ipc=1", override), tmp_path)
    assert not (tmp_path / "distilled.safetensors").exists() and not (tmp_path / "results.json").exists()


def test_full_trains_at_least_its_step_floor(tmp_path):
    results = execute(compose(*TINY, "method=full", "budget.full_min_steps=40"), tmp_path)
    assert results["train_steps"] == 40  # 300 images: two steps a pass, so 20 passes instead of 1


def test_the_step_floor_ends_the_last_pass_part_way(monkeypatch):
    from distillkit import training

    steps = []
    make = training.make_optimizer

    def counting(params, spec, lr):
        optimizer = make(params, spec, lr)
        optimizer.register_step_post_hook(lambda *args: steps.append(1))
        return optimizer

    monkeypatch.setattr(training, "make_optimizer", counting)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    images, labels = torch.randn(10, 1, 2, 2), torch.arange(10) % 2
    training.train_classifier(model, images, labels, TrainSpec(epochs=1, batch_size=4, min_steps=7))
    assert len(steps) == 7  # three steps a pass: two passes and one step of a third
