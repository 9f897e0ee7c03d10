"""The generative evaluator (``evaluator=generative``, D2C): its measures on known inputs (FID, copy rate), a
tiny run end to end through ``distillkit run`` and ``distillkit eval``, its one-line errors, and resume.

Tiny digits (``support.TINY``): 30 training and 20 test images per class, a smoke UNet measured at 2 and 4
training steps; the judge (``roles.judge``) trains a few steps, so numbers mean nothing — only their shape,
their direction and their reproducibility are tested.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

import distillkit.cli as cli
from distillkit.data.synthetic import SyntheticSet
from distillkit.diffusion.pixels import to_model_space
from distillkit.evaluators.generative import (PROGRESS_NAME, TRAINING_FOLDER, FrechetDistance, GenerativeEvaluator,
                                              JudgeFeatures, copy_rate, nearest_distances)
from distillkit.roles.diffusion import untrained_local_diffusion
from distillkit.run import execute
from distillkit.selection import random_per_class, seeded
from distillkit.validation import build
from support import TINY, compose, distillkit, tiny_context, unet_training_inputs

GENERATIVE = (*TINY, "method=random", "ipc=2", "evaluator=generative")
LENGTHS = (2, 4)  # budget=smoke's gen_eval_at_steps
METRICS = ("fid_held_out", "fid_train", "generated_accuracy", "copy_rate")


def two_per_class(ctx) -> SyntheticSet:
    pool = SyntheticSet(ctx.train_images, ctx.train_labels)
    return pool.subset(random_per_class(pool, 2, 10, seeded(0)))


def test_fid_of_a_set_with_itself_is_zero_and_of_a_shifted_set_positive():
    ctx = tiny_context(None, "evaluator=generative")
    features = JudgeFeatures(ctx.role("judge"), ctx.data.test_images)
    assert features.num_features == 128  # ConvNet-3's 128 channels, pooled over space
    fid = FrechetDistance(features, ctx.data.test_images, batch_size=64)
    itself, shifted = fid(ctx.data.test_images), fid(ctx.data.test_images + 0.5)
    assert shifted > 0 and abs(itself) < 1e-3 * shifted
    assert fid(ctx.train_images) > abs(itself)  # other real images of the same classes: close, not zero


def test_copy_rate_is_one_for_training_images_and_zero_for_noise():
    ctx = tiny_context(None)
    train, test = to_model_space(ctx.train_images, ctx.data), to_model_space(ctx.data.test_images, ctx.data)
    threshold = 0.5 * nearest_distances(test, train).median().item()
    assert copy_rate(train[::7], train, threshold) == 1.0
    noise = torch.rand(100, *train.shape[1:], generator=seeded(0)) * 2 - 1
    assert copy_rate(noise, train, threshold) == 0.0
    assert copy_rate(test, train, threshold) < 0.1  # real unseen images are not copies


def test_a_milestone_sees_the_model_a_training_of_that_length_keeps(tmp_path):
    """What the evaluator samples at 2 of 4 steps is the EMA model a 2-step training saves."""
    ctx = tiny_context(None)
    _, _, train = unet_training_inputs(ctx)
    seen = {}

    def trained(steps: int, milestones=()):
        torch.manual_seed(0)
        model = untrained_local_diffusion({"width": 8, "channel_mult": [1, 2], "layers_per_block": 1,
                                           "attention": False}, {**train, "steps": steps}, ctx.data, False, ctx.device)

        def keep(step: int) -> None:
            seen[step] = {k: v.clone() for k, v in model.denoiser.state_dict().items()}

        model.fit(ctx.train_images, ctx.train_labels, tmp_path / str(steps), 0, milestones=milestones,
                  at_milestone=keep)
        return model

    longer, shorter = trained(4, milestones=[2]), trained(2)
    assert set(seen) == {2}
    assert all(torch.equal(seen[2][k], v) for k, v in shorter.denoiser.state_dict().items())
    assert not all(torch.equal(seen[2][k], v) for k, v in longer.denoiser.state_dict().items())


def test_random_then_eval_reports_every_metric_at_every_length(tmp_path):
    results = execute(compose(*GENERATIVE), tmp_path)
    assert results["status"] == "evaluated" and "accuracy" not in results  # not a classifier's test accuracy
    assert results["primary_metric"] == {"name": "fid_held_out", "higher_is_better": False, "unit": ""}
    assert GenerativeEvaluator.direction() == "minimize"
    metrics = results["metrics"]
    assert set(metrics) == {f"{m}@{n}" for m in METRICS for n in LENGTHS} | set(METRICS)
    for name in METRICS:
        assert metrics[name] == metrics[f"{name}@{LENGTHS[-1]}"]  # the unsuffixed ones: the longest training
        assert len(metrics[name]["runs"]) == 1  # budget=smoke: one seed
    assert all(m["mean"] >= 0 for m in metrics.values())
    assert 0 <= metrics["copy_rate"]["mean"] <= 1 and 0 <= metrics["generated_accuracy"]["mean"] <= 100
    assert results["fid_features"].startswith("classifier: roles.judge (convnet, seed 1)")
    details = results["generative"]
    assert details["eval_at_steps"] == list(LENGTHS) and "test split" in details["fid_reference"]["held_out"]
    assert {"train", "sample", "fid", "accuracy", "copy_rate"} <= set(details["seconds"])
    assert "judge" in results["roles"] and (tmp_path / "generated_grid.png").is_file()
    assert (tmp_path / PROGRESS_NAME).is_file() and not (tmp_path / TRAINING_FOLDER).exists()

    # distillkit eval <run dir>: the same protocol on the saved set gives the same numbers
    out = tmp_path / "again"
    assert cli.main(["eval", str(tmp_path), *TINY, "evaluator=generative", "--out", str(out)]) == 0
    again = json.loads((out / "eval_results.json").read_text())
    for name, metric in metrics.items():
        assert again["metrics"][name]["runs"] == pytest.approx(metric["runs"], rel=1e-5, abs=1e-7), name


@pytest.mark.skipif(importlib.util.find_spec("torch_fidelity") is not None,
                    reason="with torch-fidelity the Inception extractor may build (a network, cached weights)")
def test_inception_features_offline_are_one_line_before_anything_runs(tmp_path):
    out = distillkit("run", *GENERATIVE, "evaluator.fid_features=inception", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("distillkit: error: evaluator.fid_features: inception: cannot build")
    assert "evaluator.fid_features=classifier" in lines[0]
    assert not (tmp_path / "distilled.safetensors").exists()  # found before the method ran


def test_unknown_extractor_and_a_missing_class_are_one_line(tmp_path, capsys):
    assert cli.main(["run", *GENERATIVE, "evaluator.fid_features=dino"]) == 2
    assert capsys.readouterr().err.strip() == ("distillkit: error: evaluator.fid_features: input should be "
                                               "'classifier' or 'inception' (got 'dino')")
    ctx = tiny_context(None)
    distilled = two_per_class(ctx)
    distilled.subset(torch.nonzero(distilled.labels != 3).flatten()).save(tmp_path / "no_threes.safetensors")
    assert cli.main(["eval", str(tmp_path / "no_threes.safetensors"), *TINY, "evaluator=generative"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("distillkit: error: the generative evaluator needs at least 1 image")
    assert "class(es) 3 (0)" in err[0]


def test_an_interrupted_evaluation_resumes_to_the_same_numbers(tmp_path, monkeypatch):
    ctx = tiny_context(tmp_path / "a", "evaluator=generative")
    distilled = two_per_class(ctx)
    measure = GenerativeEvaluator.measure
    measured = []

    def interrupted_at_the_second_length(self, model, s, length, *rest):
        if measured:
            raise KeyboardInterrupt
        measured.append(length)
        return measure(self, model, s, length, *rest)

    monkeypatch.setattr(GenerativeEvaluator, "measure", interrupted_at_the_second_length)
    with pytest.raises(KeyboardInterrupt):
        build(ctx.cfg.evaluator, "evaluator")(distilled, ctx)
    saved = json.loads((tmp_path / "a" / PROGRESS_NAME).read_text())["state"]["runs"]
    assert list(saved) == ["generative@2/0"]
    checkpoint, = (tmp_path / "a" / TRAINING_FOLDER).glob("*/seed0/checkpoint.pt")
    assert torch.load(checkpoint, weights_only=True)["position"] == 2  # training goes on from the first length

    def counted(self, model, s, length, *rest):
        measured.append(length)
        return measure(self, model, s, length, *rest)

    measured.clear()
    monkeypatch.setattr(GenerativeEvaluator, "measure", counted)
    resumed = build(ctx.cfg.evaluator, "evaluator")(distilled, ctx)
    assert measured == [4]  # the first length came from the progress file
    whole = build(ctx.cfg.evaluator, "evaluator")(distilled, tiny_context(tmp_path / "b", "evaluator=generative"))
    for name, metric in whole.metrics.items():
        assert resumed.metrics[name].runs == pytest.approx(metric.runs, rel=1e-5, abs=1e-7), name
    assert not (tmp_path / "a" / TRAINING_FOLDER).exists()
