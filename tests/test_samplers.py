"""Coreset samplers: per-class counts, seeding, and the herding / k-center selection rules."""

from __future__ import annotations

import pytest
import torch

from distillkit.data.synthetic import SyntheticSet
from distillkit.errors import UserError
from distillkit.generators.real import RealPool
from distillkit.samplers.coreset import HerdingSampler, KCenterSampler, RandomSampler
from support import StubContext


def fake_ctx(ipc, num_classes=3, seed=0):
    return StubContext(ipc, num_classes=num_classes, seed=seed)


def pool(per_class=(7, 5, 9)):
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(per_class)])
    return SyntheticSet(torch.randn(len(labels), 1, 4, 4), labels)


def test_random_sampler_counts_and_seeding():
    p = pool()
    picks = RandomSampler()(p, None, fake_ctx(4))
    assert torch.bincount(p.labels[picks]).tolist() == [4, 4, 4] and len(set(picks.tolist())) == 12
    assert torch.equal(picks, RandomSampler()(p, None, fake_ctx(4)))
    assert not torch.equal(picks, RandomSampler()(p, None, fake_ctx(4, seed=1)))


def test_real_pool_of_pool_factor_times_ipc_per_class():
    p = pool()
    ctx = fake_ctx(2)
    ctx.train_images, ctx.train_labels = p.images, p.labels
    assert RealPool()(ctx).images is p.images  # the whole training set by default
    small = RealPool(pool_factor=2)(ctx)
    assert small.per_class_counts(3) == [4, 4, 4]
    rows = {tuple(row.flatten().tolist()) for row in p.images}
    assert all(tuple(image.flatten().tolist()) in rows for image in small.images)  # real images only
    assert torch.equal(small.images, RealPool(pool_factor=2)(ctx).images)
    assert not torch.equal(small.images, RealPool(pool_factor=2, seed=1)(ctx).images)
    with pytest.raises(UserError, match="pool_factor"):
        RealPool(pool_factor=0)


def test_too_few_samples_in_a_class_is_a_user_error():
    with pytest.raises(UserError, match="class 1 has 5 samples"):
        RandomSampler()(pool(), None, fake_ctx(6))


def test_herding_first_pick_is_nearest_the_mean_and_mean_converges():
    torch.manual_seed(0)
    features = torch.randn(200, 8)
    chosen = HerdingSampler().select(features, 20)
    mean = features.mean(0)
    assert chosen[0] == (features - mean).norm(dim=1).argmin()
    herd_gap = (features[chosen].mean(0) - mean).norm()
    random_gap = torch.stack([(features[torch.randperm(200)[:20]].mean(0) - mean).norm() for _ in range(50)])
    assert herd_gap < random_gap.min()
    assert len(set(chosen.tolist())) == 20


def test_kcenter_covers_the_outliers():
    features = torch.cat([torch.zeros(50, 2) + 0.01 * torch.randn(50, 2), torch.tensor([[10.0, 0], [0, 10.0]])])
    chosen = set(KCenterSampler().select(features, 3).tolist())
    assert {50, 51} <= chosen
