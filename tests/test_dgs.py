"""DGS: the log transform and threshold search, the difficulty-guided sampler, classifier
difficulty, the diffusion pool (local UNet and pretrained DiT path) and an end-to-end smoke run."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from distillkit.data.synthetic import SyntheticSet
from distillkit.diffusion.denoisers import build_unet
from distillkit.diffusion.pixels import from_pixels, padding_for, to_model_space
from distillkit.diffusion.training import train_denoiser
from distillkit.errors import DivergedError, UserError
from distillkit.generators.diffusion_pool import DiffusionPool
from distillkit.roles import diffusion as diffusion_roles
from distillkit.roles.diffusion import DiffusionRole
from distillkit.run import execute
from distillkit.samplers.difficulty_guided import (
    FLOOR, DifficultyGuided, draw_by_quota, histogram, largest_remainder, log_transform, search_thresholds,
)
from distillkit.scorers.difficulty import ClassifierDifficulty
from distillkit.stages import Scores
from distillkit.training import bf16_applies
from distillkit.validation import build
from support import TINY, StubContext, StubRole, compose, tiny_context, tiny_dit_pipeline, unet_training_inputs

# log transform and threshold search


def test_log_transform_clips_at_the_ranks_and_stretches_on_a_log_scale():
    scores = np.array([0.0, 0.1, 0.2, 0.5, 1.0])
    # b = 2nd smallest = 0.1, t = 2nd largest = 0.5
    expected = [FLOOR, FLOOR, np.log(2) / np.log(5), 1.0, 1.0]
    assert np.allclose(log_transform(scores, 1, 1), expected)


def test_log_transform_replaces_a_zero_bottom_and_is_applied_in_input_order():
    scores = np.array([0.9, 0.0, 0.3, 0.0])
    out = log_transform(scores, 0, 0)  # b = 0 → 1e-4, t = 0.9
    assert np.allclose(out, [1.0, FLOOR, np.log(0.3 / FLOOR) / np.log(0.9 / FLOOR), FLOOR])


@pytest.mark.parametrize("scores", [np.zeros(7), np.full(7, 0.3), np.array([0.2, 0.2, 0.2, 0.9])])
def test_log_transform_without_a_range_maps_everything_to_the_floor(scores):
    out = log_transform(scores, 1, 2)
    assert np.all(np.isfinite(out)) and np.all(out == FLOOR)


def reference_objective(raw, th_b, th_t):
    """The released code's objective (scipy entropy over density histograms); inf when unsupported."""
    from scipy.stats import entropy

    hist_raw, _ = np.histogram(raw, bins=10, range=(0, 1), density=True)
    hist_log, _ = np.histogram(log_transform(raw, th_b, th_t), bins=10, range=(0, 1), density=True)
    return 0.5 * entropy(hist_raw, hist_log, base=2) + 0.5 * entropy(np.full(10, 0.1), hist_log, base=2)


@pytest.mark.parametrize("seed", range(3))
def test_threshold_search_agrees_with_the_released_objective_where_it_is_finite(seed):
    raw = np.random.default_rng(seed).beta(0.4, 3.0, size=250)  # a pool biased toward easy samples
    grid = list(itertools.product(range(25), range(25)))
    values = [reference_objective(raw, *th) for th in grid]
    assert np.isfinite(values).any()
    assert search_thresholds(raw, ipc=50, bins=10) == grid[int(np.argmin(values))]


def test_threshold_search_at_ipc_1_ties_and_all_zero_scores():
    assert search_thresholds(np.array([0.3, 0.1, 0.7, 0.2, 0.9]), ipc=1, bins=10) == (0, 0)
    assert search_thresholds(np.zeros(50), ipc=10, bins=10) == (0, 0)  # every pair ties: the first
    th = search_thresholds(np.r_[np.zeros(30), np.full(20, 0.5)], ipc=10, bins=10)
    assert all(0 <= t < 5 for t in th)


def test_largest_remainder_rounding():
    assert largest_remainder(np.array([3, 0, 5, 2, 0, 0, 0, 0, 0, 1]), 10).tolist() == [3, 0, 4, 2, 0, 0, 0, 0, 0, 1]
    assert largest_remainder(np.ones(10), 15).tolist() == [2] * 5 + [1] * 5  # ties: easier bins first
    assert largest_remainder(np.array([1, 1, 1]), 1).tolist() == [1, 0, 0]


def test_draw_takes_all_of_a_short_bin_and_fills_the_rest_at_random():
    bins = np.array([0, 0, 0, 1, 5, 5, 5, 5])
    picks = draw_by_quota(bins, np.array([0, 3, 0, 0, 0, 2, 0, 0, 0, 0]), torch.Generator().manual_seed(0))
    assert len(picks) == 5 and len(set(picks.tolist())) == 5
    assert 3 in picks and sum(bins[picks] == 5) >= 2


# the sampler


def fake_ctx(ipc, seed=0, run_dir=None):
    return StubContext(ipc, seed=seed, run_dir=run_dir)


def scored_pool(per_class=40, num_classes=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    pool = SyntheticSet(torch.randn(len(labels), 1, 4, 4, generator=g), labels)
    real_labels = torch.arange(num_classes).repeat_interleave(100)
    real = torch.rand(len(real_labels), generator=g) ** 3  # real data: mostly easy
    return pool, Scores(torch.rand(len(labels), generator=g), real, real_labels)


def test_difficulty_matched_draws_exactly_the_real_histogram_when_the_pool_has_enough(tmp_path):
    pool, scores = scored_pool(per_class=200)
    picks = DifficultyGuided(log_transform=False)(pool, scores, fake_ctx(10, run_dir=tmp_path))
    assert torch.bincount(pool.labels[picks]).tolist() == [10, 10] and len(set(picks.tolist())) == 20
    for c in range(2):
        target = largest_remainder(histogram(scores.real[scores.real_labels == c].numpy(), 10), 10)
        assert histogram(scores.pool[picks[pool.labels[picks] == c]].numpy(), 10).tolist() == target.tolist()


def test_dgs_per_bin_counts_follow_the_target_and_the_report_is_written(tmp_path):
    pool, scores = scored_pool()
    picks = DifficultyGuided()(pool, scores, fake_ctx(10, run_dir=tmp_path))
    assert torch.bincount(pool.labels[picks]).tolist() == [10, 10]
    report = json.loads((tmp_path / "difficulty.json").read_text())
    assert report["sampler"]["log_transform"] and set(report["classes"]) == {"c0", "c1"}
    for entry in report["classes"].values():
        assert sum(entry["target"]) == 10 == sum(entry["chosen"])
        assert set(entry["thresholds"]) == {"th_b", "th_t"} and all(0 <= v < 5 for v in entry["thresholds"].values())
        # a bin gives its quota, or everything it has when short; the fill only adds
        assert all(ch >= min(t, p) for ch, t, p in zip(entry["chosen"], entry["target"], entry["pool"]))
    assert Image.open(tmp_path / "difficulty.png").size[0] > 0


def test_uniform_target_needs_no_real_scores_and_works_at_ipc_1():
    pool, scores = scored_pool()
    sampler = DifficultyGuided(target="uniform")
    assert torch.bincount(pool.labels[sampler(pool, Scores(scores.pool), fake_ctx(1))]).tolist() == [1, 1]
    assert torch.bincount(pool.labels[DifficultyGuided()(pool, scores, fake_ctx(1))]).tolist() == [1, 1]


def test_sampler_is_seeded():
    pool, scores = scored_pool()
    first = DifficultyGuided()(pool, scores, fake_ctx(10))
    assert torch.equal(first, DifficultyGuided()(pool, scores, fake_ctx(10)))
    assert not torch.equal(first, DifficultyGuided(seed=1)(pool, scores, fake_ctx(10)))
    assert not torch.equal(first, DifficultyGuided()(pool, scores, fake_ctx(10, seed=3)))


def test_all_zero_difficulty_gives_a_full_selection_without_nan():
    pool, scores = scored_pool()
    zeros = Scores(torch.zeros(len(pool)), torch.zeros(200), scores.real_labels)
    assert torch.bincount(pool.labels[DifficultyGuided()(pool, zeros, fake_ctx(10))]).tolist() == [10, 10]


def test_sampler_errors_are_one_line_user_errors():
    pool, scores = scored_pool(per_class=4)
    with pytest.raises(UserError, match="class 0 has 4 samples in the pool, fewer than ipc=5"):
        DifficultyGuided()(pool, scores, fake_ctx(5))
    with pytest.raises(UserError, match="scorer=classifier_difficulty"):
        DifficultyGuided()(pool, None, fake_ctx(2))
    with pytest.raises(UserError, match="score_real=true"):
        DifficultyGuided()(pool, Scores(scores.pool), fake_ctx(2))
    with pytest.raises(UserError, match=r"must lie in \[0, 1\]"):
        DifficultyGuided(target="uniform")(pool, Scores(scores.pool * 3), fake_ctx(2))
    with pytest.raises(UserError, match="sampler.target: input should be 'real' or 'uniform'"):
        build({"_target_": "distillkit.samplers.difficulty_guided.DifficultyGuided", "target": "hard"}, "sampler")


# the scorer


def teacher_ctx(tmp_path, teacher):
    real_images, real_labels = torch.randn(5, 1, 4, 4), torch.tensor([2, 1, 0, 0, 1])
    return StubContext(1, num_classes=3, cache_dir=tmp_path, train_images=real_images, train_labels=real_labels,
                       role_values={"teacher": teacher})


def test_classifier_difficulty_is_one_minus_the_true_class_probability(tmp_path):
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    pool = SyntheticSet(torch.randn(9, 1, 4, 4), torch.tensor([0, 1, 2] * 3))
    ctx = teacher_ctx(tmp_path, teacher)
    real_images, real_labels = ctx.train_images, ctx.train_labels
    scores = ClassifierDifficulty(batch_size=4)(pool, ctx)

    def difficulty(images, labels):
        return 1 - teacher(images).softmax(1)[torch.arange(len(labels)), labels]

    assert torch.allclose(scores.pool, difficulty(pool.images, pool.labels), atol=1e-6)
    assert torch.allclose(scores.real, difficulty(real_images, real_labels), atol=1e-6)
    assert torch.equal(scores.real_labels, real_labels)
    assert ClassifierDifficulty(score_real=False)(pool, ctx).real is None


def test_real_difficulty_is_scored_once_per_teacher(tmp_path):
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    pool = SyntheticSet(torch.randn(3, 1, 4, 4), torch.tensor([0, 1, 2]))
    ctx = teacher_ctx(tmp_path, teacher)
    first = ClassifierDifficulty()(pool, ctx).real
    with torch.no_grad():
        teacher[1].weight[0].add_(1.0)  # a cached teacher cannot change: any rescoring would show
    assert torch.equal(ClassifierDifficulty()(pool, ctx).real, first)
    ctx.roles.roles["teacher"] = StubRole(teacher, {"name": "another"})
    assert not torch.allclose(ClassifierDifficulty()(pool, ctx).real, first)


def test_the_pool_report_needs_no_teacher_unless_the_method_scores_with_one(tmp_path):
    """dgs_pool_random draws at random: nothing in its run may train a teacher (not even for a report)."""
    results = execute(compose(*TINY, "method=dgs_pool_random", "ipc=1"), tmp_path)
    assert results["roles"].keys() == {"diffusion"} and not (tmp_path / "pool_quality.json").exists()


# the diffusion pool


def tiny_ctx(tmp_path, *overrides):
    return tiny_context(tmp_path, "method=dgs", "ipc=1", *overrides)


def diffusion_role(ctx, pipeline=None, **changes) -> DiffusionRole:
    """The run's diffusion role with ``changes`` (and a ready ``pipeline``), in place of the configured one."""
    node = {**OmegaConf.to_container(ctx.cfg.roles.diffusion, resolve=True), **changes}
    ctx.roles.roles["diffusion"] = role = build(node, "roles.diffusion", pipeline=pipeline)
    return role


def pool_generator(ctx, **changes) -> DiffusionPool:
    return build({**OmegaConf.to_container(ctx.cfg.generator, resolve=True), **changes}, "generator")


@pytest.mark.parametrize("zca", [False, True])
def test_model_space_round_trip_returns_the_real_images(zca, tmp_path):
    ctx = tiny_ctx(tmp_path, f"dataset.zca={zca}")
    images = ctx.train_images[:20]
    pixels = to_model_space(images, ctx.data)
    assert pixels.min() >= -1 and pixels.max() <= 1
    assert torch.allclose(from_pixels((pixels + 1) / 2, ctx.data), images, atol=1e-3)


def test_padding_lets_every_unet_level_halve_the_image_and_a_dit_cut_square_patches():
    assert padding_for((28, 28), 4) == (0, 0, 0, 0)   # 3 levels: halved twice
    assert padding_for((28, 28), 8) == (2, 2, 2, 2)   # 4 levels
    assert padding_for((8, 8), 8) == (0, 0, 0, 0)
    assert padding_for((30, 27), 4) == (0, 1, 1, 1)
    assert padding_for((30, 27), 4, square=True) == (2, 3, 1, 1)  # 32 × 32
    assert padding_for((28, 28), 8, square=True) == (2, 2, 2, 2)


def test_unet_with_attention_keeps_the_image_shape():
    unet = build_unet({"width": 8, "channel_mult": [1, 2], "layers_per_block": 1, "attention": True},
                                     3, 4, (8, 8))
    assert unet.down_blocks[-1].attentions and unet.up_blocks[0].attentions
    out = unet(torch.randn(2, 3, 8, 8), torch.tensor([3, 500]), class_labels=torch.tensor([0, 4])).sample
    assert out.shape == (2, 3, 8, 8)


def test_local_pool_trains_once_and_generates_labelled_images(tmp_path, monkeypatch):
    ctx = tiny_ctx(tmp_path, "roles.diffusion.unet.channel_mult=[1,2,2,2]")  # 8×8 digits through 4 levels
    pool = pool_generator(ctx)(ctx)
    assert pool.images.shape == (50, 1, 8, 8) and torch.isfinite(pool.images).all()
    assert pool.per_class_counts(10) == [5] * 10
    assert SyntheticSet.load(tmp_path / "pool.safetensors").images.shape == pool.images.shape
    assert (tmp_path / "pool_grid.png").is_file()

    def no_training(*args, **kwargs):
        raise AssertionError("the UNet should come from the cache")

    monkeypatch.setattr(diffusion_roles, "train_denoiser", no_training)
    assert torch.equal(pool_generator(ctx)(ctx).images, pool.images)  # the cached pool
    other_seed = tiny_ctx(tmp_path / "s1", "roles.diffusion.unet.channel_mult=[1,2,2,2]", "seed=1")
    assert not torch.equal(pool_generator(other_seed)(other_seed).images, pool.images)  # same UNet, new pool


def test_unet_cache_key_records_the_precision_that_runs(tmp_path):
    """A bf16 UNet (CUDA, or a CPU with bf16 units) never answers for an fp32 one, nor the other way round."""
    ctx = tiny_ctx(tmp_path)
    specs = {amp: diffusion_role(ctx, amp=amp).spec(ctx) for amp in (True, False)}
    assert "amp" not in specs[True]  # the switch alone would read the same on hosts that ignore it
    assert specs[False]["precision"] == "fp32"
    assert specs[True]["precision"] == ("bf16" if bf16_applies(torch.device("cpu"), True, on_cpu=True) else "fp32")


def test_unet_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    ctx = tiny_ctx(tmp_path)
    unet, pixels, train = unet_training_inputs(ctx)
    folder = tmp_path / "entry.partial"
    folder.mkdir()

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(type(unet), "save_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_denoiser(unet, pixels, ctx.train_labels, 10, {**train, "steps": 2, "checkpoint_every": 2}, folder, 0,
                       False)
    assert torch.load(folder / "checkpoint.pt", weights_only=True)["position"] == 2
    monkeypatch.undo()
    train_denoiser(unet, pixels, ctx.train_labels, 10, {**train, "steps": 4, "checkpoint_every": 2}, folder, 0, False)
    history = json.loads((folder / "training.json").read_text())["loss"]
    assert [h["step"] for h in history] == [2, 4] and not (folder / "checkpoint.pt").exists()
    assert (folder / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_nan_diffusion_loss_is_a_diverged_error(tmp_path):
    ctx = tiny_ctx(tmp_path)
    unet, pixels, train = unet_training_inputs(ctx)
    with pytest.raises(DivergedError, match="diffusion training"):
        train_denoiser(unet, pixels * float("nan"), ctx.train_labels, 10, train, tmp_path, 0, False)


def test_pretrained_pipeline_path_resizes_and_normalises(tmp_path):
    ctx = tiny_ctx(tmp_path)
    class_map = {str(d): 100 + d for d in range(10)}
    diffusion_role(ctx, source="pretrained", pipeline=tiny_dit_pipeline(),
                   pretrained={"model_id": None, "class_map": class_map})
    pool = pool_generator(ctx, batch_size=16)(ctx)
    assert pool.images.shape == (50, 1, 8, 8) and pool.per_class_counts(10) == [5] * 10
    pixels = ctx.data.denormalise(pool.images)
    assert torch.isfinite(pixels).all() and pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    role = diffusion_role(ctx, source="pretrained", pipeline=tiny_dit_pipeline(), pretrained={"class_map": {"0": 1}})
    with pytest.raises(UserError, match="no label for class"):
        role.materialise(ctx)


def test_config_errors_name_their_key():
    with pytest.raises(UserError, match="roles.diffusion.source: input should be 'local' or 'pretrained'"):
        build({"_target_": "distillkit.roles.diffusion.DiffusionRole", "source": "gan"}, "roles.diffusion")
    with pytest.raises(UserError, match="generator.pool_factor: input should be greater than or equal to 1"):
        build({"_target_": "distillkit.generators.diffusion_pool.DiffusionPool", "pool_factor": 0}, "generator")


# end to end


def test_dgs_smoke_run_writes_results_difficulty_plot_and_pool(tmp_path):
    results = execute(compose(*TINY, "method=dgs", "ipc=2"), tmp_path)
    assert results["method"] == "dgs" and results["images_per_class"] == [2] * 10
    assert set(results["seconds"]) >= {"roles", "generator", "scorer", "sampler", "evaluator"}
    quality = json.loads((tmp_path / "pool_quality.json").read_text())["teacher_accuracy"]
    assert set(quality["per_class"]) == {str(d) for d in range(10)} and 0 <= quality["mean"] <= 100
    assert SyntheticSet.load(tmp_path / "pool.safetensors").per_class_counts(10) == [10] * 10
    assert Image.open(tmp_path / "difficulty.png").size[0] > 0
    assert len(json.loads((tmp_path / "difficulty.json").read_text())["classes"]) == 10
    distilled = SyntheticSet.load(tmp_path / "distilled.safetensors")
    assert distilled.meta["method"] == "dgs" and "source" not in distilled.meta


@pytest.mark.parametrize("method", ["dgs_pool_random", "dgs_no_log", "dgs_uniform", "dgs_pool_full"])
def test_ablation_methods_run_on_the_generated_pool(method, tmp_path):
    results = execute(compose(*TINY, f"method={method}", "ipc=2"), tmp_path)
    assert results["images_per_class"] == [10 if method == "dgs_pool_full" else 2] * 10
