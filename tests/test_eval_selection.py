"""Selection without the test set (issue 21): the sealed test split, checkpoint selection on the validation
split, the lr grid, and the soft-label protocols (soft CE / KL; stored labels / a teacher on the fly)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distillkit.data.synthetic import SyntheticSet
from distillkit.errors import SealedTestSetError, UserError
from distillkit.evaluators.classifier import ClassifierEvaluator
from distillkit.generators.real import RealPool
from distillkit.run import execute
from distillkit.selection import random_per_class, seeded
from distillkit.training import BestWeights, TrainSpec, soft_target_loss, train_classifier
from distillkit.validation import ConfigError
from support import TINY, compose, tiny_context

FINAL_TEST = "ClassifierEvaluator: final test"


def two_per_class(ctx) -> SyntheticSet:
    pool = SyntheticSet(ctx.train_images, ctx.train_labels)
    return pool.subset(random_per_class(pool, 2, 10, seeded(0)))


def evaluator(**settings) -> ClassifierEvaluator:
    return ClassifierEvaluator(**{"epochs": 4, "num_seeds": 1, "dsa": False, "lr": 0.05, **settings})


# ---- the sealed test split ----------------------------------------------------------------------------

def test_the_test_split_is_readable_only_inside_the_final_evaluation():
    ctx = tiny_context(None)
    with pytest.raises(SealedTestSetError, match="outside the final evaluation"):
        ctx.test_images
    with pytest.raises(SealedTestSetError):
        ctx.test_labels
    with ctx.final_evaluation("a test"):
        assert torch.equal(ctx.test_labels, ctx.data.test_labels)
    with pytest.raises(SealedTestSetError):  # closed again after the block
        ctx.test_images
    with pytest.raises(AttributeError):  # no instance attribute shadows the seal
        ctx.test_images = ctx.train_images
    assert ctx.test_reads == ["a test"]


def test_a_generator_that_reads_the_test_set_stops_the_run(tmp_path, monkeypatch):
    real_call = RealPool.__call__

    def peeking(self, ctx):
        ctx.test_images  # selecting on the test set: what the seal exists to stop
        return real_call(self, ctx)

    monkeypatch.setattr(RealPool, "__call__", peeking)
    with pytest.raises(SealedTestSetError):
        execute(compose(*TINY, "method=random", "ipc=2"), tmp_path)


def test_best_val_reads_the_test_set_only_for_the_final_test_and_best_test_is_labelled():
    ctx = tiny_context(None)
    distilled = two_per_class(ctx)
    report = evaluator(checkpoint="best_val", select_every=1, num_seeds=2)(distilled, ctx)
    assert ctx.test_reads == [FINAL_TEST] * 2  # one per seed, after its training: selection never opened it
    assert report.details["selection"] == "best_val (validation split)"
    assert report.details["validation_images"] == len(ctx.split.held_out_labels) > 0
    assert len(report.details["selected_epochs"]) == 2 and all(1 <= e <= 4 for e in report.details["selected_epochs"])

    ctx = tiny_context(None)
    report = evaluator(checkpoint="best_test", select_every=2)(distilled, ctx)
    assert ctx.test_reads == ["ClassifierEvaluator: checkpoint=best_test"] * 2 + [FINAL_TEST]  # epochs 2, 4
    assert report.details["selection"] == "best_test (test-set selection: not a fair number)"


def test_best_test_is_labelled_in_results_and_the_final_line(tmp_path):
    from distillkit.results import result_line

    payload = execute(compose(*TINY, "method=random", "ipc=2", "evaluator.checkpoint=best_test",
                              "evaluator.select_every=1"), tmp_path)
    assert payload["selection"] == "best_test (test-set selection: not a fair number)"
    assert "best_test (test-set selection: not a fair number)" in result_line(payload, tmp_path)
    assert "ClassifierEvaluator: checkpoint=best_test" in payload["test_set_readers"]


def test_the_default_selects_nothing_and_reads_the_test_set_once_per_seed(tmp_path):
    payload = execute(compose(*TINY, "method=random", "ipc=2"), tmp_path)
    assert payload["selection"] == "final" and payload["test_set_readers"] == [FINAL_TEST]
    assert "selected_epochs" not in payload and "validation_images" not in payload


def test_unknown_checkpoint_rule_is_a_config_error():
    with pytest.raises(ConfigError, match="checkpoint"):
        evaluator(checkpoint="best")


# ---- checkpoint selection ------------------------------------------------------------------------------

def test_best_weights_restores_the_epoch_that_scored_highest():
    """A constructed case: scores peak at epoch 2 of 5 (a tie at 4 keeps the earlier); the restored weights are
    exactly those after epoch 2, and epoch 5 (the last) is scored although 5 % 2 != 0."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    images, labels = torch.randn(12, 4), torch.arange(12) % 3
    snapshots = {}
    scores = iter([0.9, 0.9, 0.1])  # what epochs 2, 4 and 5 score
    keeper = BestWeights(model, lambda m: next(scores), every=2, epochs=5)

    def after(e):
        snapshots[e] = {k: v.clone() for k, v in model.state_dict().items()}
        keeper(e)

    train_classifier(model, images, labels, TrainSpec(epochs=5, lr=0.1, batch_size=12), after_epoch=after)
    assert keeper.history == [(2, 0.9), (4, 0.9), (5, 0.1)] and keeper.best == (0.9, 2)
    assert not torch.equal(model.state_dict()["1.weight"], snapshots[2]["1.weight"])
    keeper.restore()
    assert all(torch.equal(v, snapshots[2][k]) for k, v in model.state_dict().items())


def test_best_val_reports_the_test_accuracy_of_the_best_on_validation_weights(monkeypatch):
    """With the validation score scripted to peak at epoch 1 of 4, the reported accuracy is that of a network
    trained for 1 epoch with the same seed (one step at the initial lr: 4 epochs halve the lr only at step 2)."""
    ctx = tiny_context(None)
    distilled = two_per_class(ctx)
    epochs_seen = iter(range(1, 100))
    monkeypatch.setattr(ClassifierEvaluator, "validate", lambda self, model, ctx: -next(epochs_seen))
    selected = evaluator(checkpoint="best_val", select_every=1, epochs=4)(distilled, ctx)
    assert selected.details["selected_epochs"] == [1]
    one_epoch = evaluator(epochs=1)(distilled, tiny_context(None))
    assert selected.primary_metric.mean == one_epoch.primary_metric.mean


def test_lr_grid_picks_the_lr_best_on_validation_and_trains_every_seed_at_it():
    ctx = tiny_context(None)
    distilled = two_per_class(ctx)
    report = evaluator(lr_grid=[1e-6, 0.05], num_seeds=2)(distilled, ctx)
    grid = report.details["lr_grid"]["convnet"]
    assert set(grid) == {"1e-06", "0.05"} and grid["0.05"] > grid["1e-06"]  # a vanishing lr learns nothing
    assert report.details["eval_lr"] == 0.05
    assert ctx.test_reads == [FINAL_TEST] * 2  # the grid never opened the test set


# ---- soft labels ---------------------------------------------------------------------------------------

def test_soft_losses_match_their_hand_computed_values_and_differ():
    logits, reference, t = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[0.5, 1.5, 0.0]]), 2.0

    def softmax(v):
        e = [math.exp(x) for x in v]
        return [x / sum(e) for x in e]

    p_t = softmax([x / t for x in reference[0].tolist()])
    q1 = softmax(logits[0].tolist())
    q_t = softmax([x / t for x in logits[0].tolist()])
    soft_ce = -sum(p * math.log(q) for p, q in zip(p_t, q1))
    kl = t * t * sum(p * (math.log(p) - math.log(q)) for p, q in zip(p_t, q_t))
    assert soft_target_loss(logits, reference, "soft_ce", t).item() == pytest.approx(soft_ce, rel=1e-5)
    assert soft_target_loss(logits, reference, "kl", t).item() == pytest.approx(kl, rel=1e-5)
    assert abs(soft_ce - kl) > 0.1


def test_soft_loss_kl_trains_a_different_network_and_is_recorded():
    ctx = tiny_context(None)
    distilled = two_per_class(ctx)
    distilled.soft_labels = torch.randn(len(distilled), 10, generator=seeded(1)) * 3
    weights = {}
    for loss in ("soft_ce", "kl"):
        protocol = evaluator(soft_loss=loss, soft_label_temperature=4.0)
        report = protocol(distilled, ctx)
        assert report.details["soft_labels"] == {"loss": loss, "source": "stored", "temperature": 4.0}
        assert report.details["labels"] == "soft"
        torch.manual_seed(0)
        model = ctx.build_model("convnet")
        protocol.fit(model, distilled.images, protocol.targets(distilled), None, ctx,
                     loss_fn=protocol.loss_fn(distilled, ctx))
        weights[loss] = model.classifier.weight.detach().clone()
    assert not torch.allclose(weights["soft_ce"], weights["kl"])
    assert evaluator(soft_label_temperature=4.0).loss_fn(distilled, ctx) is None  # the default: today's loss


def test_soft_loss_kl_gradient_differs_from_soft_ce():
    """At T > 1 the KL scales by T² and softens the student too: not soft CE's gradient."""
    logits = torch.tensor([[2.0, 0.0, -1.0]], requires_grad=True)
    reference = torch.tensor([[0.5, 1.5, 0.0]])
    grads = []
    for kind in ("soft_ce", "kl"):
        (grad,) = torch.autograd.grad(soft_target_loss(logits, reference, kind, 3.0), logits)
        grads.append(grad)
    assert not torch.allclose(grads[0], grads[1])
    # KL's gradient: T · (softmax(s/T) − softmax(r/T))
    expected = 3.0 * (F.softmax(logits.detach() / 3.0, 1) - F.softmax(reference / 3.0, 1))
    assert torch.allclose(grads[1], expected, atol=1e-6)


def test_soft_source_teacher_needs_soft_labels_and_the_teacher_role():
    with pytest.raises(ConfigError, match="soft_source"):
        evaluator(soft_source="teacher", labels="hard")
    assert evaluator(soft_source="teacher").roles == ("teacher",)
    assert evaluator().roles == ()


def test_a_set_whose_learned_lr_is_not_positive_is_one_line_naming_the_fix():
    ctx = tiny_context(None)
    distilled = two_per_class(ctx)
    distilled.lr = torch.tensor(-0.017)  # what SGD on α reached by iteration 50 on digits without augmentation
    with pytest.raises(UserError, match=r"learned lr is -0.017.*evaluator.use_learned_lr=false"):
        evaluator()(distilled, ctx)
    assert 0 < evaluator(use_learned_lr=False)(distilled, ctx).metrics["accuracy"].mean <= 100
