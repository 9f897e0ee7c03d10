"""The shared training loop learns, honours soft labels, and stops on a NaN loss."""

from __future__ import annotations

import pytest
import torch

from support import TINY, compose
from distillkit.data.augment import DSA
from distillkit.errors import DivergedError
from distillkit.models import create_model
from distillkit.run import prepare_data
from distillkit.training import TrainSpec, accuracy, classification_loss, train_classifier, train_settings


@pytest.fixture(scope="module")
def digits():
    return prepare_data(compose(*TINY).dataset)


def test_training_on_real_digits_beats_chance_by_far(digits):
    torch.manual_seed(0)
    model = create_model("convnet", 1, 10, (8, 8), width=32)
    before = accuracy(model, digits.test_images, digits.test_labels)
    train_classifier(model, digits.train_images, digits.train_labels, TrainSpec(epochs=40, lr=0.05, batch_size=64),
                     augment=DSA(seed=0))
    after = accuracy(model, digits.test_images, digits.test_labels)
    assert after > 70 and after > before + 40


def test_soft_targets_equal_hard_cross_entropy_for_one_hot():
    logits = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 3, 0, 1])
    one_hot = torch.nn.functional.one_hot(labels, 4).float()
    assert torch.allclose(classification_loss(logits, labels), classification_loss(logits, one_hot))


def test_nan_loss_raises_diverged(digits):
    model = create_model("convnet", 1, 10, (8, 8), width=8)
    images = digits.train_images[:20].clone()
    images[0] = float("nan")
    with pytest.raises(DivergedError, match="loss became nan"):
        train_classifier(model, images, digits.train_labels[:20], TrainSpec(epochs=1))


def test_same_seed_same_accuracy(digits):
    def run():
        torch.manual_seed(3)
        model = create_model("convnet", 1, 10, (8, 8), width=16)
        train_classifier(model, digits.train_images, digits.train_labels, TrainSpec(epochs=3), augment=DSA(seed=3))
        return accuracy(model, digits.test_images, digits.test_labels)

    assert run() == run()


def test_compile_enters_a_cache_key_only_when_on():
    """Roles cached before the ``compile`` switch existed keep their keys; a compiled run gets its own."""
    assert "compile" not in train_settings(TrainSpec(epochs=1))
    assert train_settings(TrainSpec(epochs=1, compile=True))["compile"] is True
