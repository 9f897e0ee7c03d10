"""Distribution matching (DM) and decomposed DM: the loss terms, the agent, siamese DSA per class,
end-to-end smoke runs, exact resume, and divergence errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from distillkit.data.augment import DSA
from distillkit.data.synthetic import SyntheticSet
from distillkit.errors import DivergedError, UserError
from distillkit.generators.distribution_matching.agent import AgentProbe, parameters_not_reinitialised, reinitialise
from distillkit.generators.distribution_matching.batches import augment_per_class
from distillkit.generators.distribution_matching.generator import CHECKPOINT_NAME, GRID_FOLDER
from distillkit.generators.distribution_matching.losses import (correlation_loss, diversity_loss, embedding_mean_loss,
                                                                moments_loss, style_statistics)
from distillkit.models import create_model
from distillkit.run import execute, make_context, plan
from distillkit.tracking import NoTracker, Traced
from distillkit.validation import build
from support import TINY, compose, tiny_context


class RecordingTracker(NoTracker):
    def __init__(self):
        self.metrics, self.images = [], []

    def log_metrics(self, metrics, step=None):
        self.metrics.append((step, metrics))

    def log_image(self, name, path, step=None):
        self.images.append((step, path))


def start(run_dir, *overrides, method="dm", tracker=None):
    """A generator, its context on the tiny digits set (3 images per class), and its tracker."""
    cfg = compose(*TINY, f"method={method}", "ipc=3", *overrides)
    tracker = tracker or RecordingTracker()
    return build(cfg.generator, "generator"), make_context(cfg, run_dir, plan(cfg).roles, tracker), tracker


# ---- the loss terms --------------------------------------------------------------------------

def grouped(per_class, groups=2, channels=4, size=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(groups * per_class, channels, size, size, generator=g)


def layer_stats(features, groups):
    return [style_statistics(features, groups, moments=True, correlation=True)]


def test_terms_are_zero_when_statistics_agree_even_with_other_batch_sizes():
    syn = grouped(per_class=3)
    # Each class's real batch is its synthetic batch twice: same means, same batch-averaged maps and Grams.
    real = torch.cat([syn[:3], syn[:3], syn[3:], syn[3:]])
    real_embeddings, syn_embeddings = real.flatten(1).unflatten(0, (2, -1)), syn.flatten(1).unflatten(0, (2, -1))
    assert embedding_mean_loss(real_embeddings.mean(1), syn_embeddings).abs() < 1e-10
    assert moments_loss(layer_stats(syn, 2), layer_stats(real, 2)).abs() < 1e-10
    assert correlation_loss(layer_stats(syn, 2), layer_stats(real, 2)).abs() < 1e-10


def test_terms_are_positive_when_statistics_differ():
    syn, real = grouped(per_class=3, seed=0), grouped(per_class=6, seed=1) * 1.5 + 0.3
    real_embeddings, syn_embeddings = real.flatten(1).unflatten(0, (2, -1)), syn.flatten(1).unflatten(0, (2, -1))
    assert embedding_mean_loss(real_embeddings.mean(1), syn_embeddings) > 0
    assert moments_loss(layer_stats(syn, 2), layer_stats(real, 2)) > 0
    assert correlation_loss(layer_stats(syn, 2), layer_stats(real, 2)) > 0


def test_moments_see_per_channel_mean_and_std_of_the_batch_averaged_map():
    features = torch.zeros(2, 1, 2, 2)
    features[0, 0] = torch.tensor([[0.0, 2.0], [4.0, 6.0]])  # the batch average is [[0, 1], [2, 3]]
    stats = style_statistics(features, 1, moments=True, correlation=False)
    assert torch.allclose(stats["mean"], torch.tensor([[1.5]]))
    assert torch.allclose(stats["std"], (torch.tensor([0.0, 1, 2, 3]).var() + 1e-5).sqrt().reshape(1, 1))


def test_diversity_is_zero_for_identical_samples_negative_otherwise_and_zero_at_ipc_one():
    same = torch.ones(2, 4, 8)
    assert diversity_loss(same, neighbours=2).abs() < 1e-7
    spread = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(0))
    assert diversity_loss(spread, neighbours=2) < 0
    assert diversity_loss(spread[:, :1], neighbours=2) == 0


def test_diversity_pushes_neighbours_apart():
    embeddings = torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    diversity_loss(embeddings, neighbours=2).backward()
    with torch.no_grad():
        moved = embeddings - 0.1 * embeddings.grad
    assert diversity_loss(moved, 2) < diversity_loss(embeddings.detach(), 2)


# ---- the agent and the augmentation ----------------------------------------------------------

def test_agent_is_redrawn_in_place(tmp_path):
    generator, ctx, _ = start(tmp_path)
    run = generator.start(ctx)
    before = {name: p.clone() for name, p in run.agent.named_parameters()}
    modules = list(run.agent.modules())
    reinitialise(run.agent)
    assert list(run.agent.modules()) == modules
    assert all(not torch.equal(p, before[n]) for n, p in run.agent.named_parameters() if n.endswith("weight")
               and p.ndim > 1)
    assert parameters_not_reinitialised(run.agent) == []
    assert not any(p.requires_grad for p in run.agent.parameters())


def test_siamese_augmentation_is_shared_within_a_class_and_drawn_per_class():
    torch.manual_seed(0)
    image = torch.randn(1, 1, 12, 12)
    groups, per_real, per_syn = 4, 5, 2
    real, syn = image.repeat(groups * per_real, 1, 1, 1), image.repeat(groups * per_syn, 1, 1, 1)
    real_out, syn_out = augment_per_class(DSA("scale_rotate", seed=0), real, syn, groups)
    per_class = []
    for c in range(groups):
        r, s = real_out[c * per_real:(c + 1) * per_real], syn_out[c * per_syn:(c + 1) * per_syn]
        assert torch.allclose(r, r[:1].expand_as(r)) and torch.allclose(s, r[:per_syn])
        per_class.append(r[0])
    assert not all(torch.allclose(per_class[0], other) for other in per_class[1:])


# ---- gradients, batching ---------------------------------------------------------------------

@pytest.mark.parametrize("term", ["mmd", "moments", "correlation", "diversity"])
def test_each_term_sends_gradients_to_every_pixel(tmp_path, term):
    terms = [f"generator.terms.{t}={'true' if t == term else 'false'}" for t in ("mmd", "moments", "correlation",
                                                                                   "diversity")]
    generator, ctx, _ = start(tmp_path, *terms)
    run = generator.start(ctx)
    index = run.sampler.draw(run.batch_real)
    loss = run.matching_terms(run.real_images[index.flatten()], run.images, run.num_classes).sum()
    loss.backward()
    per_image = run.images.grad.abs().flatten(1).sum(1)
    assert torch.isfinite(run.images.grad).all() and (per_image > 0).all()


def test_grouping_classes_into_passes_does_not_change_the_result(tmp_path):
    results = []
    for per_pass in (16, 10_000):  # one class per pass vs all classes in one pass
        generator, ctx, _ = start(tmp_path / str(per_pass), f"generator.max_real_per_pass={per_pass}",
                                  method="ddm")
        run = generator.start(ctx)
        assert len(run.class_groups) == (10 if per_pass == 16 else 1)
        run.step(), run.step()
        results.append(run.images.detach())
    assert torch.allclose(*results, atol=1e-5)


def test_compiled_agent_pass_gives_the_eager_terms(tmp_path):
    """torch.compile of the agent pass changes the speed, not the loss or its gradient."""
    values, gradients = [], []
    for compiled in (False, True):
        generator, ctx, _ = start(tmp_path / str(compiled), f"generator.compile={compiled}", "generator.amp=false",
                                  method="ddm")
        run = generator.start(ctx)
        assert run.probe.compiled is compiled and run.probe.walks
        torch.manual_seed(0)
        reinitialise(run.agent)
        index = run.sampler.draw(run.batch_real)
        terms = run.matching_terms(run.real_images[index.flatten()], run.images, run.num_classes)
        (terms * run.weights).sum().backward()
        values.append(terms.detach())
        gradients.append(run.images.grad)
    assert torch.allclose(*values, rtol=1e-4, atol=1e-6)
    assert (gradients[1] - gradients[0]).norm() / gradients[0].norm() < 1e-4


def test_compiled_bf16_probe_matches_eager_on_fashion_mnist_sized_images():
    """In bf16 on a CPU, a compiled 28×28 ConvNet graph that also held the Gram matmuls returned NaN
    embeddings (torch 2.15); the probe keeps the statistics outside the graph."""
    agent = create_model("convnet", 1, 10, (28, 28)).requires_grad_(False)
    images = torch.randn(10, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    results = []
    for compiled in (False, True):
        probe = AgentProbe(agent, moments=True, correlation=True, compile=compiled)
        syn = images.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            embeddings, maps = probe(syn)
        stats = probe.statistics(maps, groups=2)
        loss = embeddings.float().mean(0).square().sum() + sum(layer["gram"].sum() + layer["std"].sum()
                                                               for layer in stats)
        loss.backward()
        results.append((embeddings.float(), syn.grad))
    (eager, eager_grad), (compiled, compiled_grad) = results
    assert torch.isfinite(compiled).all() and torch.isfinite(compiled_grad).all()
    assert (compiled - eager).norm() / eager.norm() < 0.05
    assert (compiled_grad - eager_grad).norm() / eager_grad.norm() < 0.1


def test_style_terms_of_agents_with_nested_norms_are_read_through_hooks(tmp_path):
    generator, ctx, _ = start(tmp_path, "generator.model=resnetap10", method="ddm")
    run = generator.start(ctx)
    assert not run.probe.walks and len(run.probe.layers) > 3
    index = run.sampler.draw(run.batch_real)
    terms = run.matching_terms(run.real_images[index.flatten()], run.images, run.num_classes)
    assert torch.isfinite(terms).all() and (terms[1:3] > 0).all()  # moments and correlation from every layer


def test_batch_norm_agents_see_every_class_in_one_pass(tmp_path):
    generator, ctx, _ = start(tmp_path, "generator.model=convnet_bn", "generator.max_real_per_pass=16")
    run = generator.start(ctx)
    assert [(g.start, g.stop) for g in run.class_groups] == [(0, 10)]
    run.step()
    assert torch.isfinite(run.images).all()


def test_style_terms_need_norm_layers(tmp_path):
    generator, ctx, _ = start(tmp_path, "generator.model=alexnet", method="ddm")
    with pytest.raises(UserError, match="no norm layers"):
        generator.start(ctx)


# ---- end to end --------------------------------------------------------------------------------

def fixed_matching_loss(run, images, draws=6):
    """The weighted matching terms (diversity left out) under fixed agents and real batches."""
    keep = torch.get_rng_state()
    torch.manual_seed(1234)
    totals = []
    for _ in range(draws):
        reinitialise(run.agent)
        index = run.sampler.draw(run.batch_real)
        with torch.no_grad():
            terms = run.matching_terms(run.real_images[index.flatten()], images, run.num_classes)
        totals.append(sum(w * t for name, w, t in zip(run.gen.terms, run.weights, terms) if name != "diversity"))
    torch.set_rng_state(keep)
    return float(torch.stack(totals).mean())


@pytest.mark.parametrize("method", ["dm", "ddm"])
def test_smoke_run_lowers_the_matching_loss_and_logs(tmp_path, method):
    generator, ctx, tracker = start(tmp_path, "generator.init=noise", "generator.iterations=10",
                                    "generator.log_every=5", "generator.grid_every=5", method=method)
    run = generator.start(ctx)
    initial = fixed_matching_loss(run, run.images.detach().clone())
    run.run_to(generator.iterations)
    assert fixed_matching_loss(run, run.images.detach()) < initial
    assert [step for step, _ in tracker.metrics] == [5, 10]
    assert set(tracker.metrics[0][1]) == {"dm/loss", "dm/max_abs_pixel", *(f"dm/{t}" for t in generator.terms)}
    assert sorted(p.name for p in (tmp_path / GRID_FOLDER).iterdir()) == ["iteration_000005.png",
                                                                         "iteration_000010.png"]
    distilled = run.synthetic_set()
    assert distilled.images.shape == (30, 1, 8, 8) and distilled.per_class_counts(10) == [3] * 10


def test_dm_through_the_pipeline_writes_a_distilled_set(tmp_path):
    results = execute(compose(*TINY, "method=dm", "ipc=2", "generator.log_every=2"), tmp_path)
    assert results["method"] == "dm" and results["images_per_class"] == [2] * 10
    assert json.loads((tmp_path / "results.json").read_text())["config"]["generator"]["iterations"] == 5
    distilled = SyntheticSet.load(tmp_path / "distilled.safetensors")
    real = tiny_context(tmp_path).train_images
    assert not any(torch.equal(image, r) for image in distilled.images for r in real)  # the pixels moved
    assert (tmp_path / CHECKPOINT_NAME).is_file()
    loss = json.loads((tmp_path / "results.json").read_text())["trace"]["dm/loss"]  # logged at 2, 4 and the last, 5
    assert (loss["first_step"], loss["last_step"]) == (2, 5) and loss["first"] > 0 and loss["last"] > 0


def test_the_trace_keeps_the_first_and_last_value_of_each_stepped_metric_and_forwards_everything():
    inner = RecordingTracker()
    traced = Traced(inner)
    traced.log_metrics({"tm/loss": 0.9, "tm/syn_lr": 0.01}, step=10)
    traced.log_metrics({"tm/loss": 0.7}, step=20)
    traced.log_metrics({"tm/loss": 0.8, "tm/syn_lr": 0.02}, step=30)
    traced.log_metrics({"accuracy/mean": 81.0})  # a summary without a step: forwarded, not traced
    traced.log_image("grid", Path("g.png"), step=30)  # the rest of the tracker's interface passes through
    assert traced.trace == {"tm/loss": {"first_step": 10, "first": 0.9, "last_step": 30, "last": 0.8},
                            "tm/syn_lr": {"first_step": 10, "first": 0.01, "last_step": 30, "last": 0.02}}
    assert [step for step, _ in inner.metrics] == [10, 20, 30, None] and inner.images == [(30, Path("g.png"))]


def test_ddm_config_switches_every_term_on_with_the_authors_weights():
    generator = compose("method=ddm").generator
    assert dict(generator.terms) == {"mmd": True, "moments": True, "correlation": True, "diversity": True}
    assert (generator.style_weight, generator.moments_weight, generator.diversity_weight) == (10000, 1, 10)
    assert dict(compose("method=dm").generator.terms) == {"mmd": True, "moments": False, "correlation": False,
                                                          "diversity": False}


# ---- checkpoints and resume --------------------------------------------------------------------

def test_resumed_run_gives_the_same_images_as_an_uninterrupted_one(tmp_path):
    common = ("generator.checkpoint_every=3", "generator.log_every=2")
    generator, ctx, _ = start(tmp_path / "straight", "generator.iterations=7", *common, method="ddm")
    straight = generator(ctx)

    generator, ctx, _ = start(tmp_path / "split", "generator.iterations=4", *common, method="ddm")
    generator(ctx)  # "interrupted" after 4 iterations; its last checkpoint is at iteration 4
    torch.manual_seed(999)  # whatever happened in between must not matter
    generator, ctx, _ = start(tmp_path / "split", "generator.iterations=7", *common, method="ddm")
    resumed = generator(ctx)
    assert torch.equal(straight.images, resumed.images)


def test_resume_refuses_a_checkpoint_made_with_other_settings(tmp_path):
    generator, ctx, _ = start(tmp_path, "generator.iterations=2")
    generator(ctx)
    generator, ctx, _ = start(tmp_path, "generator.iterations=4", "generator.lr_img=0.5")
    with pytest.raises(UserError, match=r"other settings \(lr_img: 1.0 -> 0.5\)"):
        generator(ctx)
    generator, ctx, _ = start(tmp_path, "generator.iterations=4", "generator.lr_img=0.5", "generator.resume=true")
    assert generator.start(ctx).iteration == 2
    generator, ctx, _ = start(tmp_path, "generator.iterations=4", "generator.resume=false")
    assert generator.start(ctx).iteration == 0


def test_a_corrupt_checkpoint_is_a_user_error(tmp_path):
    (tmp_path / CHECKPOINT_NAME).write_bytes(b"\x00" * 64)
    generator, ctx, _ = start(tmp_path)
    with pytest.raises(UserError, match="not a readable checkpoint"):
        generator.start(ctx)


def test_resume_true_without_a_checkpoint_is_a_user_error(tmp_path):
    generator, ctx, _ = start(tmp_path, "generator.resume=true")
    with pytest.raises(UserError, match="no checkpoint"):
        generator(ctx)


# ---- divergence ----------------------------------------------------------------------------------

def test_nan_raises_diverged_error_naming_iteration_and_last_checkpoint(tmp_path):
    generator, ctx, _ = start(tmp_path, "generator.iterations=6", "generator.checkpoint_every=2",
                              "generator.log_every=1")
    run = generator.start(ctx)
    run.run_to(2)
    with torch.no_grad():
        run.images[0, 0, 0, 0] = float("nan")
    with pytest.raises(DivergedError, match=rf"iteration 3: .*last good checkpoint: {tmp_path / CHECKPOINT_NAME}"):
        run.run_to(6)
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["position"] == 2


def test_nan_before_any_checkpoint_says_so(tmp_path):
    generator, ctx, _ = start(tmp_path, "generator.log_every=1")
    run = generator.start(ctx)
    with torch.no_grad():
        run.images[0, 0, 0, 0] = float("nan")
    with pytest.raises(DivergedError, match="iteration 1: .*no checkpoint was written yet"):
        run.run_to(2)


def test_a_nan_pixel_lr_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(UserError, match=r"generator.lr_img: input should be greater than 0 \(got nan\)"):
        start(tmp_path, "generator.lr_img=nan")


def test_exploding_matching_loss_raises_diverged_error(tmp_path):
    generator, ctx, _ = start(tmp_path)
    run = generator.start(ctx)
    run.step()
    run.report()  # the first window sets the reference
    run.reference_loss /= 2e4  # so the next window reads as about 2×10⁴ times the first
    run.step()
    with pytest.raises(DivergedError, match="exploded by iteration 2: matching loss"):
        run.report()
