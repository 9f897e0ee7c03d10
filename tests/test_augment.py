"""DSA: shapes, differentiability, siamese parameter sharing; ZCA whitening."""

from __future__ import annotations

import pytest
import torch

from distillkit.data.augment import DSA, OPS, ZCA
from distillkit.errors import UserError


@pytest.mark.parametrize("op", OPS)
def test_each_op_keeps_shape_and_passes_gradients(op):
    x = torch.randn(4, 3, 16, 16, requires_grad=True)
    out = DSA(op, seed=0)(x)
    assert out.shape == x.shape
    out.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("op", OPS)
def test_siamese_applies_one_transform_to_both_batches(op):
    torch.manual_seed(0)
    image = torch.randn(1, 3, 16, 16)
    real, syn = image.repeat(5, 1, 1, 1), image.repeat(2, 1, 1, 1)
    a, b = DSA(op, seed=1).siamese(real, syn)
    assert torch.allclose(a, a[:1].expand_as(a)) and torch.allclose(a[:2], b)


def test_siamese_transform_changes_between_calls_and_differs_from_identity():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 16, 16)
    dsa = DSA("scale_rotate", seed=0)
    first, second = dsa.siamese(x)[0], dsa.siamese(x)[0]
    assert not torch.allclose(first, x) and not torch.allclose(first, second)


def test_non_siamese_transforms_differ_per_sample():
    torch.manual_seed(0)
    x = torch.randn(1, 1, 16, 16).repeat(8, 1, 1, 1)
    out = DSA("rotate", seed=0)(x)
    assert not torch.allclose(out[0], out[1])


def test_cutout_zeroes_half_the_side():
    x = torch.ones(64, 1, 16, 16)
    out = DSA("cutout", seed=0)(x)
    zeros = (out == 0).flatten(1).sum(1).float()
    assert zeros.max() == 64 and zeros.min() >= 16  # an 8×8 square, clipped at the border at worst


def test_none_strategy_is_identity_and_unknown_op_is_an_error():
    x = torch.randn(2, 1, 8, 8)
    assert DSA("none")(x) is x
    with pytest.raises(UserError, match="unknown DSA op"):
        DSA("color_warp")


def test_zca_whitens_and_inverts():
    torch.manual_seed(0)
    mix = torch.randn(48, 48)
    images = (torch.randn(500, 48) @ mix).reshape(500, 3, 4, 4)
    zca = ZCA(images, eps=1e-3)
    white = zca(images).reshape(500, -1)
    cov = torch.cov(white.T)
    assert torch.allclose(cov.diagonal().mean(), torch.tensor(1.0), atol=0.1)
    assert (cov - torch.diag(cov.diagonal())).abs().max() < 0.1
    assert torch.allclose(zca.inverse(zca(images)), images, atol=1e-3)
