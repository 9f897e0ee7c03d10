"""Every model of the factory builds from its config and runs forward and embed passes."""

from __future__ import annotations

import pytest
import torch

from distillkit.config import group_options
from distillkit.context import build_model
from distillkit.data.datasets import RealData
from distillkit.errors import UserError
from distillkit.models import create_model


def fake_data(channels: int, size: int) -> RealData:
    x = torch.zeros(2, channels, size, size)
    y = torch.tensor([0, 1])
    return RealData("fake", x, y, x, y, [str(i) for i in range(10)], (0.0,) * channels, (1.0,) * channels)


@pytest.mark.parametrize("name", group_options("model"))
@pytest.mark.parametrize("channels,size", [(1, 28), (3, 32)])
def test_model_forward_and_embed(name, channels, size):
    size = 64 if name == "convnetd6" else size  # six poolings need at least 64 pixels
    model = build_model(name, fake_data(channels, size), torch.device("cpu"))
    x = torch.randn(2, channels, size, size)
    logits = model(x)
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
    assert model.embed(x).ndim == 2
    logits.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_convnet_matches_reference_shapes():
    # DC's ConvNet pads 28×28 grey inputs to 32×32: 128 × 4 × 4 features after three poolings.
    assert create_model("convnet", 1, 10, (28, 28)).classifier.in_features == 2048
    assert create_model("convnet", 3, 10, (32, 32)).classifier.in_features == 2048
    assert create_model("convnetd4", 3, 200, (64, 64)).classifier.in_features == 2048


def test_instance_norm_is_groupnorm_per_channel():
    norms = [m for m in create_model("convnet", 3, 10, (32, 32)).modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(norms) == 3 and all(m.num_groups == m.num_channels == 128 for m in norms)


def test_unknown_model_and_options_are_user_errors():
    with pytest.raises(UserError, match="unknown model"):
        create_model("nope", 1, 10, (28, 28))
    with pytest.raises(UserError, match="needs images of at least 64 pixels"):
        create_model("convnetd6", 1, 10, (28, 28))
    with pytest.raises(UserError, match="unknown norm"):
        create_model("convnet", 1, 10, (28, 28), norm="weird")
