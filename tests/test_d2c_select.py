"""D2C's Select half: the diffusion difficulty scorer (local UNet and pretrained DiT paths, its cache), the
interval sampler and its ablation orders, and method=d2c_select_only end to end on tiny digits."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from distillkit.data.synthetic import SyntheticSet
from distillkit.diffusion.denoisers import noise_schedule
from distillkit.errors import UserError
from distillkit.generators.real import RealPool
from distillkit.roles import diffusion as diffusion_roles
from distillkit.diffusion.spaces import PixelSpace
from distillkit.roles.diffusion import LocalDiffusion
from distillkit.run import execute
from distillkit.samplers.interval import IntervalSampler, interval_step, ranks
from distillkit.scorers.diffusion_difficulty import DiffusionDifficulty
from distillkit.selection import within_class_quantiles
from distillkit.stages import Scores
from distillkit.validation import build
from support import TINY, StubContext, StubRole, compose, tiny_context, tiny_dit_pipeline

# ---- the scorer ---------------------------------------------------------------------------------------


class MemorisingDenoiser(torch.nn.Module):
    """Knows one image per class and predicts the noise as if x_t had been made from it:
    ``ε̂ = (x_t − √ᾱ_t m_c) / √(1 − ᾱ_t)``. Exact on the memorised images; on any other image x of class c
    it is off by ``√(ᾱ_t / (1 − ᾱ_t)) (x − m_c)``, so its error grows with the distance to m_c."""

    def __init__(self, memorised: torch.Tensor, alphas_cumprod: torch.Tensor):
        super().__init__()
        self.memorised, self.alphas_cumprod = memorised, alphas_cumprod

    def forward(self, noisy, timesteps, class_labels):
        a = self.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        return SimpleNamespace(sample=(noisy - a.sqrt() * self.memorised[class_labels]) / (1 - a).sqrt())


def memorising_context(tmp_path, *overrides):
    """Tiny digits whose diffusion role memorised the first training image of every class; with the
    model's pixels, the memorised images' pool indices and the noise schedule."""
    ctx = tiny_context(tmp_path, "method=d2c_select_only", "ipc=2", *overrides)
    train_cfg = OmegaConf.to_container(ctx.cfg.roles.diffusion.train, resolve=True)
    first = torch.stack([torch.nonzero(ctx.train_labels == c)[0, 0] for c in range(10)])
    no_padding = (0, 0, 0, 0)  # 8×8 digits; the stand-in needs no UNet levels
    model = LocalDiffusion(None, PixelSpace(ctx.data, no_padding), ctx.data.num_classes, train_cfg, amp=False)
    pixels = model.inputs(ctx.train_images)
    alphas = noise_schedule(train_cfg).alphas_cumprod
    model.denoiser = MemorisingDenoiser(pixels[first], alphas)
    ctx.roles.roles["diffusion"] = StubRole(model, {"memorised": "first image of every class"})
    return ctx, pixels, first, alphas


def test_images_the_model_denoises_better_score_lower(tmp_path):
    ctx, pixels, first, alphas = memorising_context(tmp_path)
    pool = RealPool()(ctx)
    timesteps = 5
    scores = DiffusionDifficulty(timesteps=timesteps, seed=3)(pool, ctx).pool

    # exactly what the formula gives: mean_t ᾱ_t/(1−ᾱ_t) · mean over pixels of (x − m_c)²
    steps = torch.linspace(0, len(alphas) - 1, timesteps).round().long()
    gain = (alphas[steps] / (1 - alphas[steps])).mean()
    distance = (pixels - pixels[first][pool.labels]).square().flatten(1).mean(1)
    assert torch.allclose(scores, gain * distance, rtol=1e-3, atol=1e-4)
    # the memorised image is the easiest of its class, every other one is harder
    assert torch.all(scores[first] < 1e-4)
    for c in range(10):
        members = torch.nonzero(pool.labels == c).flatten()
        assert int(members[scores[members].argmin()]) == int(first[c])
        assert (scores[members] > 1e-3).sum() == len(members) - 1
    # the run folder says what the scoring cost
    report = json.loads((tmp_path / "diffusion_difficulty.json").read_text())
    assert report["timesteps"] == timesteps and report["images"] == len(pool) and report["from_cache"] is False
    assert report["scoring_seconds"] >= 0


def test_scores_are_cached_by_role_pool_timesteps_and_seed(tmp_path, monkeypatch):
    ctx, *_ = memorising_context(tmp_path)
    pool = RealPool()(ctx)
    first = DiffusionDifficulty(timesteps=3, seed=0)(pool, ctx).pool

    def no_scoring(*args, **kwargs):
        raise AssertionError("the scores should come from the cache")

    monkeypatch.setattr(LocalDiffusion, "denoising_error", no_scoring)
    again = DiffusionDifficulty(timesteps=3, seed=0, batch_size=7)(pool, ctx).pool  # batch size: speed only
    assert torch.equal(again, first)
    assert json.loads((tmp_path / "diffusion_difficulty.json").read_text())["from_cache"] is True
    for changed in ({"timesteps": 4}, {"seed": 1}):  # anything that changes the scores is a new entry
        with pytest.raises(AssertionError, match="from the cache"):
            DiffusionDifficulty(**{"timesteps": 3, "seed": 0, **changed})(pool, ctx)
    with pytest.raises(AssertionError, match="from the cache"):  # another pool
        DiffusionDifficulty(timesteps=3, seed=0)(RealPool(pool_factor=2)(ctx), ctx)
    ctx.roles.roles["diffusion"] = StubRole(ctx.roles.roles["diffusion"].value, {"another": "model"})
    with pytest.raises(AssertionError, match="from the cache"):
        DiffusionDifficulty(timesteps=3, seed=0)(pool, ctx)


def test_a_pretrained_pipeline_scores_its_latents(tmp_path):
    """DiT path: images → VAE latents at the transformer's size → the transformer's noise prediction."""
    ctx = tiny_context(tmp_path, "method=d2c_select_only", "ipc=2")
    pool = RealPool(pool_factor=1)(ctx)  # 2 per class

    def role(class_map):
        node = {**OmegaConf.to_container(ctx.cfg.roles.diffusion, resolve=True), "source": "pretrained",
                "pretrained": {"model_id": None, "class_map": class_map}}
        ctx.roles = type(ctx.roles)({})
        ctx.roles.roles["diffusion"] = build(node, "roles.diffusion", pipeline=tiny_dit_pipeline())
        scores = DiffusionDifficulty(timesteps=2, batch_size=8)(pool, ctx).pool
        assert ctx.role("diffusion").latents(pool.images[:3], amp=False).shape == (3, 4, 16, 16)  # the DiT's size
        return scores

    scores = role({str(d): 100 + d for d in range(10)})
    assert scores.shape == (len(pool),) and torch.isfinite(scores).all() and (scores > 0).all()
    assert torch.equal(role({str(d): 100 + d for d in range(10)}), scores)  # the same noise, the same scores
    assert not torch.allclose(role({str(d): 500 + d for d in range(10)}), scores)  # conditioned on the label


# ---- the interval sampler -----------------------------------------------------------------------------


def test_interval_step_from_ratio_given_and_clamped():
    assert interval_step(1300, 10, None, 0.7) == (91, False)   # ImageNet at 10 per class (paper: 96); 90.999… in floats
    assert interval_step(1300, 100, None, 0.7) == (9, False)   # (paper: 10)
    assert interval_step(30, 2, None, 0.7) == (10, False)
    assert interval_step(5, 5, None, 0.7) == (1, False)        # floor(0.7) = 0 → at least 1
    assert interval_step(30, 3, 7, 0.7) == (7, False)          # given: ranks 0, 7, 14
    assert interval_step(30, 3, 15, 0.7) == (14, True)         # 15·2 = 30 is past the class: 14 fits (0, 14, 28)
    assert interval_step(30, 1, 100, 0.7) == (100, False)      # one pick: rank 0 whatever k


@pytest.mark.parametrize("order, expected", [
    ("interval", [0, 3, 6]), ("easiest", [0, 1, 2]), ("hardest", [7, 8, 9]), ("centre_out", [3, 4, 5])])
def test_ranks_of_each_order(order, expected):
    assert ranks(order, 10, 3, k=3).tolist() == expected


def test_centre_out_starts_at_the_median():
    assert ranks("centre_out", 11, 1).tolist() == [5]         # the median
    assert ranks("centre_out", 11, 2).tolist() == [4, 5]      # grows both ways (the lower side first)
    assert ranks("centre_out", 10, 2).tolist() == [4, 5]      # the two middle ones


def known_pool():
    """Class 0: scores 0.0, 0.1, …, 1.1 in shuffled pool order; class 1: 9 samples scored 9 … 1."""
    scores0 = torch.arange(12) / 10
    order0 = torch.tensor([5, 11, 0, 3, 8, 1, 10, 2, 7, 4, 9, 6])
    labels = torch.cat([torch.zeros(12, dtype=torch.long), torch.ones(9, dtype=torch.long)])
    scores = torch.cat([scores0[order0], torch.arange(9, 0, -1).float()])
    pool = SyntheticSet(torch.randn(21, 1, 2, 2), labels)
    return pool, Scores(scores), order0


def by_rank(order0, ranks0, ranks1):
    """Pool indices of class 0's ascending ranks ``ranks0`` and class 1's ``ranks1``."""
    position = torch.argsort(order0)  # pool index of each rank in class 0
    return position[ranks0].tolist() + [12 + (8 - r) for r in ranks1]  # class 1 is stored hardest first


@pytest.mark.parametrize("settings, ranks0, ranks1", [
    ({}, [0, 2, 4], [0, 2, 4]),                               # k = floor(0.7·12/3) = floor(0.7·9/3) = 2
    ({"step": 5}, [0, 5, 10], [0, 4, 8]),                     # class 1 (9 samples): 5·2 = 10 ≥ 9 → k = 4
    ({"ratio": 1.0}, [0, 4, 8], [0, 3, 6]),
    ({"order": "easiest"}, [0, 1, 2], [0, 1, 2]),
    ({"order": "hardest"}, [9, 10, 11], [6, 7, 8]),
    ({"order": "centre_out"}, [4, 5, 6], [3, 4, 5]),
])
def test_sampler_takes_the_ranks_of_the_ascending_order(settings, ranks0, ranks1):
    pool, scores, order0 = known_pool()
    chosen = IntervalSampler(**settings)(pool, scores, StubContext(3))
    assert chosen.tolist() == by_rank(order0, ranks0, ranks1)


def test_a_clamped_step_is_said_in_one_log_line(caplog):
    pool, scores, _ = known_pool()
    with caplog.at_level(logging.INFO, logger="distillkit"):
        IntervalSampler(step=5)(pool, scores, StubContext(3))
    lines = [r.getMessage() for r in caplog.records if "interval sampler" in r.getMessage()]
    assert len(lines) == 1 and "step 5" in lines[0] and "c1 (9 samples: k=4)" in lines[0] and "c0" not in lines[0]


def test_sampler_errors_are_one_line():
    pool, scores, _ = known_pool()
    with pytest.raises(UserError) as err:
        IntervalSampler()(pool, scores, StubContext(10))  # class 1 has 9
    assert str(err.value) == "class 1 has 9 samples in the pool, fewer than ipc=10"
    with pytest.raises(UserError, match="needs scores .*scorer=diffusion_difficulty"):
        IntervalSampler()(pool, None, StubContext(3))
    with pytest.raises(UserError, match="3 scores for a pool of 21"):
        IntervalSampler()(pool, Scores(torch.zeros(3)), StubContext(3))


def test_config_errors_name_their_key():
    node = {"_target_": "distillkit.samplers.interval.IntervalSampler"}
    with pytest.raises(UserError, match="sampler.order: input should be 'interval', 'easiest', 'hardest' or"):
        build({**node, "order": "median"}, "sampler")
    with pytest.raises(UserError, match="sampler.ratio: input should be less than or equal to 1"):
        build({**node, "ratio": 1.5}, "sampler")
    with pytest.raises(UserError, match="sampler.step: input should be greater than or equal to 1"):
        build({**node, "step": 0}, "sampler")


# ---- end to end ---------------------------------------------------------------------------------------


def test_select_only_runs_end_to_end_and_follows_the_interval_rule(tmp_path, monkeypatch):
    fresh = f"cache.dir={tmp_path / 'cache'}"  # its own cache: other tests may have scored the same pool already
    results = execute(compose(*TINY, "method=d2c_select_only", "ipc=2", fresh), tmp_path / "run")
    assert results["status"] == "evaluated" and results["method"] == "d2c_select_only"
    assert results["images_per_class"] == [2] * 10 and "diffusion" in results["roles"]
    assert results["seconds"]["scorer"] >= 0
    distilled = SyntheticSet.load(tmp_path / "run" / "distilled.safetensors")
    assert distilled.images.shape == (20, 1, 8, 8)
    report = json.loads((tmp_path / "run" / "diffusion_difficulty.json").read_text())
    assert report["from_cache"] is False and report["images"] == 300

    # the run's scores, read back from the cache (scoring again would fail)
    monkeypatch.setattr(diffusion_roles, "denoising_error", lambda *a, **k: pytest.fail("scored twice"))
    ctx = tiny_context(None, "method=d2c_select_only", "ipc=2", fresh)
    pool = RealPool()(ctx)
    scores = build(ctx.cfg.scorer, "scorer")(pool, ctx).pool
    for c in range(10):
        members = torch.nonzero(pool.labels == c).flatten()
        assert len(members) == 30
        k = 10  # floor(0.7 · 30 / ipc 2): ranks 0 and 10
        ascending = members[torch.sort(scores[members], stable=True).indices]
        expected = pool.images[ascending[[0, k]]]
        assert torch.equal(distilled.images[distilled.labels == c], expected.cpu())


def test_within_class_quantiles_rank_each_sample_inside_its_own_class():
    scores = torch.tensor([5.0, 1.0, 3.0, 10.0, 0.0, 7.0, 2.0])
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    quantiles = within_class_quantiles(scores, labels)
    # class 0: 1 < 3 < 5; class 1: 0 < 7 < 10; class 2 alone sits at 0
    assert quantiles.tolist() == [1.0, 0.0, 0.5, 1.0, 0.0, 0.5, 0.0]


def test_a_real_pool_short_of_ipc_fails_before_any_role_trains_or_any_image_is_scored(tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(UserError) as err:  # tiny digits has 30 training images per class
        execute(compose(*TINY, "method=d2c_select_only", "ipc=31", f"cache.dir={cache}"), tmp_path / "run")
    assert str(err.value).endswith("has 30 training images, fewer than ipc=31")
    assert not cache.exists() or not any(cache.iterdir())  # no diffusion role, no scores
    # `full` keeps the whole pool, so ipc is no bound on it
    done = execute(compose(*TINY, "method=full", "ipc=31", "schedule.stop_after=prepare", f"cache.dir={cache}"),
                   tmp_path / "full")
    assert done["status"] == "prepared"
