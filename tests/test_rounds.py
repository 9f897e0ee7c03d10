"""The ``rounds`` schedule end to end, with a tiny method composed here (no shipped method uses it yet):
real batches stream into a replay buffer, a random sampler draws learner batches from it, a classifier
learner trains on them. Results, the buffer's bounds, the learner's accuracy, exact resume, divergence,
and a missing learner."""

from __future__ import annotations

import json

import pytest
import torch

from distillkit.data.synthetic import SyntheticSet
from distillkit.errors import DivergedError
from distillkit.generators.real import RealBatches
from distillkit.learners.classifier import ClassifierLearner
from distillkit.run import execute
from distillkit.schedules.rounds import CHECKPOINT_NAME, Rounds
from support import ROUNDS, TINY, compose, distillkit, interrupted_after_round


def rounds_run(run_dir, *overrides):
    return execute(compose(*TINY, *ROUNDS, *overrides), run_dir)


def final_state(run_dir) -> dict:
    return torch.load(run_dir / CHECKPOINT_NAME, weights_only=True)["state"]


def test_rounds_fill_a_bounded_buffer_and_train_the_learner_above_chance(tmp_path, monkeypatch):
    per_round, batches = [], []
    play_round, step = Rounds.round, ClassifierLearner.step

    def recorded_round(self, stages, buffer, ctx, clock):
        play_round(self, stages, buffer, ctx, clock)
        per_round.append((len(buffer), buffer.added))

    def recorded_step(self, batch, ctx):
        batches.append(batch.images.clone())
        return step(self, batch, ctx)

    monkeypatch.setattr(Rounds, "round", recorded_round)
    monkeypatch.setattr(ClassifierLearner, "step", recorded_step)
    returned = rounds_run(tmp_path, "schedule.rounds=4", "schedule.steps_per_round=20")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["buffer"] == returned["buffer"]

    assert results["status"] == "evaluated" and results["method"] == "rounds_real"
    accuracy = results["metrics"]["accuracy"]
    assert accuracy == results["accuracy"] and len(accuracy["runs"]) == 1
    assert accuracy["mean"] > 50  # ten classes: chance is 10 %
    assert results["buffer"] == {"size": 60, "capacity": 60, "peak": 60, "samples_generated": 120,
                                 "samples_admitted": 120}
    # the buffer grows by one batch a round up to its capacity, then stays there; generated samples keep growing
    assert per_round == [(30, 30), (60, 60), (60, 90), (60, 120)]
    assert set(results["seconds"]) >= {"roles", "rounds", "evaluator"}

    distilled = SyntheticSet.load(tmp_path / "distilled.safetensors")
    buffer = final_state(tmp_path)["buffer"]
    assert torch.equal(distilled.images, buffer["images"]) and torch.equal(distilled.labels, buffer["labels"])
    assert results["images_per_class"] == distilled.per_class_counts(10) and sum(results["images_per_class"]) == 60
    assert distilled.meta["method"] == "rounds_real"

    # every learner step is a fresh draw from the buffer, not one batch repeated through the round
    assert len(batches) == 80 and all(b.shape == (30, 1, 8, 8) for b in batches)
    first_round = batches[:20]
    assert sum(not torch.equal(first_round[0], b) for b in first_round[1:]) >= 15


def test_an_interrupted_rounds_run_resumes_to_the_same_buffer_and_learner(tmp_path, monkeypatch):
    """Interrupted right after the checkpoint of round 2 of 4, the same run folder continues at round 3
    and ends bit for bit where an uninterrupted run ends: augmentations (the global RNG), the real-batch
    stream, the sampler's draws, the buffer and the learner's optimiser all resume."""
    args = ("schedule.rounds=4", "schedule.steps_per_round=4",
            "learner.dsa_strategy=color_crop_cutout_flip_scale_rotate")
    whole = rounds_run(tmp_path / "a", *args)

    interrupted_after_round(monkeypatch, 2, lambda: rounds_run(tmp_path / "b", *args))
    assert torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)["position"] == 2
    assert not (tmp_path / "b" / "results.json").exists()

    checkpoint = torch.load(tmp_path / "b" / CHECKPOINT_NAME, weights_only=True)
    checkpoint["seconds"] = 1000.0  # as if the interrupted process had spent 1000 s in rounds 1 and 2
    torch.save(checkpoint, tmp_path / "b" / CHECKPOINT_NAME)

    calls = []
    generate = RealBatches.__call__
    monkeypatch.setattr(RealBatches, "__call__", lambda self, ctx: calls.append(1) or generate(self, ctx))
    torch.manual_seed(999)  # whatever ran in between must not matter
    resumed = rounds_run(tmp_path / "b", *args)
    assert len(calls) == 2  # rounds 3 and 4 only
    # the cost ledger times the whole run: the earlier process's rounds, then this one's
    seconds = json.loads((tmp_path / "b" / "results.json").read_text())["seconds"]["rounds"]
    assert 1000.0 < seconds < 1000.0 + 60.0

    assert resumed["accuracy"] == whole["accuracy"] and resumed["buffer"] == whole["buffer"]
    a, b = (SyntheticSet.load(tmp_path / d / "distilled.safetensors") for d in ("a", "b"))
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    state_a, state_b = final_state(tmp_path / "a"), final_state(tmp_path / "b")
    assert torch.equal(state_a["buffer"]["scores"], state_b["buffer"]["scores"])
    learner_a, learner_b = state_a["stages"]["learner"]["model"], state_b["stages"]["learner"]["model"]
    assert all(torch.equal(learner_a[k], learner_b[k]) for k in learner_a)


def test_the_learning_curve_reads_the_held_out_tenth_changes_nothing_and_resumes(tmp_path, monkeypatch):
    """``curve_every=2`` over 4 rounds: the learner's held-out accuracy after rounds 2 and 4 with the seconds in
    rounds so far; the run's result is the one without a curve, the test set stays the evaluator's alone, and a
    run interrupted after round 2 ends with the same points."""
    args = ("schedule.rounds=4", "schedule.steps_per_round=20")
    plain_run = rounds_run(tmp_path / "plain", *args)
    whole = rounds_run(tmp_path / "a", *args, "schedule.curve_every=2")
    assert whole["metrics"] == plain_run["metrics"] and "curve" not in plain_run

    curve = whole["curve"]
    assert [p["round"] for p in curve] == [2, 4] and [p["images_generated"] for p in curve] == [60, 120]
    assert 0 < curve[0]["seconds"] < curve[1]["seconds"] <= whole["seconds"]["rounds"]
    halves = whole["rounds_seconds"]
    assert set(halves) == {"synthesis", "learning"} and min(halves.values()) > 0
    assert sum(halves.values()) == pytest.approx(curve[1]["seconds"], abs=2e-3)
    assert curve[1]["held_out_accuracy"] > 50  # ten classes: chance is 10 %
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["curve"] == curve and saved["test_set_readers"] == plain_run["test_set_readers"]

    interrupted_after_round(monkeypatch, 2, lambda: rounds_run(tmp_path / "b", *args, "schedule.curve_every=2"))
    resumed = rounds_run(tmp_path / "b", *args, "schedule.curve_every=2")
    assert [(p["round"], p["held_out_accuracy"]) for p in resumed["curve"]] == \
        [(p["round"], p["held_out_accuracy"]) for p in curve]
    assert resumed["curve"][0]["seconds"] < resumed["curve"][1]["seconds"]


def test_a_nan_learner_loss_is_a_diverged_error_naming_the_round(tmp_path, monkeypatch):
    with pytest.raises(DivergedError, match=r"by round 1 \(lower learner.lr; no checkpoint was written yet\)"):
        rounds_run(tmp_path / "lr", "schedule.rounds=2", "schedule.steps_per_round=3", "learner.lr=1e30")
    assert not (tmp_path / "lr" / CHECKPOINT_NAME).exists()

    step = ClassifierLearner.step

    def nan_from_round_3(self, batch, ctx):
        feedback = step(self, batch, ctx)
        return feedback * float("nan") if self.steps > 4 else feedback

    monkeypatch.setattr(ClassifierLearner, "step", nan_from_round_3)
    checkpoint = tmp_path / "late" / CHECKPOINT_NAME
    with pytest.raises(DivergedError, match=rf"by round 3 \(lower learner.lr; last good checkpoint: {checkpoint}\)"):
        rounds_run(tmp_path / "late", "schedule.rounds=4", "schedule.steps_per_round=2")
    assert torch.load(checkpoint, weights_only=True)["position"] == 2


def test_rounds_without_a_learner_is_one_line_before_anything_runs(tmp_path):
    no_learner = [a for a in ROUNDS if "learner" not in a]
    out = distillkit("run", *TINY, *no_learner, f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.strip().splitlines()
    assert lines[-1] == "distillkit: error: learner: the rounds schedule trains a learner: pick one (learner=classifier)"
    assert "distillkit: method=" not in out.stdout  # the run's description: printed only once every check passed
    assert not any((tmp_path / name).exists() for name in ("results.json", "distilled.safetensors", CHECKPOINT_NAME))

