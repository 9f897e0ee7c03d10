"""Trajectory matching (MTT, DATM, PAD): expert trajectories (cache, shards, resume), the curriculum,
the difficulty scorers, parameter selection, the matching loss and its gradients, the memory option,
resume, and smoke runs through the pipeline."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from distillkit.data.synthetic import SyntheticSet
from distillkit.errors import UserError
from distillkit.generators.trajectory_matching.generator import CHECKPOINT_NAME
from distillkit.generators.trajectory_matching.objective import kept_elements, matching_loss
from distillkit.generators.trajectory_matching.optimiser import MaskedSGD
from distillkit.generators.trajectory_matching.unroll import unroll_checkpointed, unroll_full
from distillkit.models import create_model
from distillkit.roles import QUALITY_FILE
from distillkit.roles import experts as experts_module
from distillkit.roles.experts import CACHE_KIND, TRAJECTORY_FILE, ExpertTrajectories, Trajectory
from distillkit import run as pipeline
from distillkit.run import execute
from distillkit.samplers.curriculum import CurriculumSampler
from distillkit.scorers.training_dynamics import EL2N, GraNd
from distillkit.training import bf16_applies
from distillkit.validation import build
from support import TINY, compose, tiny_context


def setup(run_dir, *overrides, method="mtt"):
    """The generator and its context on tiny digits (30 images per class, ipc 2), in fp32: these tests
    check the mathematics to 1e-5 and below, under bf16's rounding (on CPUs with bf16 units) they could not."""
    ctx = tiny_context(run_dir, f"method={method}", "ipc=2", "generator.amp=false", *overrides)
    generator = build(ctx.cfg.generator, "generator")
    generator.check(ctx)
    return generator, ctx


def started(run_dir, *overrides, method="mtt"):
    generator, ctx = setup(run_dir, *overrides, method=method)
    return generator, ctx, generator.start(ctx, ctx.role("experts"))


# ---- the curriculum ------------------------------------------------------------------------------

def test_curriculum_follows_the_schedule_with_each_class_own_size():
    sampler = CurriculumSampler(init_ratio=0.5, add_end_epoch=4, remove_first_epoch=6, remove_second_epoch=8,
                                remove_first_ratio=0.1, remove_second_ratio=0.3)
    sizes = [10, 40, 7]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])[torch.randperm(sum(sizes))]
    scores = torch.rand(len(labels))
    ordered = sampler.order(scores, labels, 3)
    for c, members in enumerate(ordered):  # easy → hard within the class
        assert (labels[members] == c).all() and (scores[members].diff() >= 0).all()

    def expected(epoch, n):
        if epoch <= 4:
            return 0, int(min(1.0, 0.5 + 0.5 * epoch / 4) * n)
        if epoch <= 6:
            return 0, n
        return int((0.1 if epoch <= 8 else 0.3) * n), n

    for epoch in range(11):
        chosen = set(sampler.indices(ordered, epoch).tolist())
        for members, n in zip(ordered, sizes):
            first, stop = expected(epoch, n)
            assert chosen & set(members.tolist()) == set(members[first:stop].tolist()), (epoch, n)
    assert len(sampler.indices(ordered, 0)) == 5 + 20 + 3  # half of each class, not of a hard-coded size


def test_curriculum_rejects_an_impossible_schedule():
    with pytest.raises(UserError, match="add_end_epoch: the curriculum needs add_end_epoch <= remove_first_epoch"):
        build({"_target_": "distillkit.samplers.curriculum.CurriculumSampler", "add_end_epoch": 30,
               "remove_first_epoch": 20}, "sampler")


# ---- scorers -----------------------------------------------------------------------------------------

def test_el2n_and_grand_match_their_definitions(tmp_path):
    ctx = tiny_context(tmp_path)
    pool = SyntheticSet(ctx.train_images[:6], ctx.train_labels[:6])
    el2n = EL2N(num_models=1, epochs=1, seed=3, quality_floor=0)(pool, ctx).pool
    grand = GraNd(num_models=1, epochs=0, seed=3)(pool, ctx).pool
    torch.manual_seed(3)
    model = ctx.build_model("convnet").eval()  # GraNd at initialisation: the same network the scorer drew
    for i in range(2):
        model.zero_grad()
        F.cross_entropy(model(pool.images[i:i + 1]), pool.labels[i:i + 1]).backward()
        norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
        assert torch.allclose(grand[i], norm, rtol=1e-4)
    assert el2n.shape == (6,) and ((el2n >= 0) & (el2n <= 2 ** 0.5)).all() and el2n.std() > 0


# ---- parameter selection and the loss ----------------------------------------------------------------

def test_parameter_selection_keeps_the_right_elements():
    error = torch.tensor([5.0, 0.1, 3.0, 0.2, 4.0, 0.3, 2.0, 1.0])
    assert kept_elements("none", 0.5, error) == slice(None)
    assert torch.arange(8)[kept_elements("depth", 0.25, error)].tolist() == [2, 3, 4, 5, 6, 7]  # deep ones
    assert sorted(kept_elements("loss", 0.5, error).tolist()) == [0, 2, 4, 6]  # the four largest errors
    start, target = torch.zeros(8), torch.ones(8)
    student = target + error.sqrt()
    # loss selection: kept error 5 + 3 + 4 + 2 over a start distance of 4 elements
    assert matching_loss(student, start, target, "loss", 0.5) == pytest.approx(14 / 4)
    assert matching_loss(student, start, target, "depth", 0.25) == pytest.approx(10.5 / 6)


def test_matching_loss_is_zero_at_the_target_and_one_at_the_start(tmp_path):
    _, _, run = started(tmp_path)
    expert, start_epoch, plans = run.draw()
    start = expert.parameters_at(start_epoch, run.device)
    theta = start.clone().requires_grad_(True)
    for plan in plans:
        theta = run.step_fn(theta, plan, create_graph=False)
    reached = theta.detach()  # an expert that ended exactly where the student does
    loss = unroll_full(run.step_fn, start, plans, lambda final: matching_loss(final, start, reached), run.leaves)
    assert loss < 1e-8  # zero up to the rounding of a graph-building recomputation
    missed = reached + 0.01 * (reached - start).norm() / reached.numel() ** 0.5
    assert unroll_full(run.step_fn, start, plans, lambda final: matching_loss(final, start, missed), run.leaves) > 1e-5
    assert matching_loss(start, start, reached) == pytest.approx(1.0)


def test_gradients_reach_pixels_lr_and_soft_labels(tmp_path):
    _, _, run = started(tmp_path, method="datm")
    assert run.label_logits is not None
    run.optimizer.zero_grad()
    loss = run.matching_gradients(*run.draw())
    assert torch.isfinite(loss) and loss > 0
    for leaf in (run.images, run.syn_lr, run.label_logits):
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
    assert (run.images.grad.flatten(1).abs().sum(1) > 0).all()  # every image (batch_syn = all)
    assert run.syn_lr.grad != 0 and (run.label_logits.grad.abs().sum(1) > 0).all()


@pytest.mark.parametrize("method", ["mtt", "datm", "pad"])
def test_checkpointed_unroll_gives_the_plain_unroll_loss_and_gradients(tmp_path, method):
    _, _, run = started(tmp_path, "generator.syn_steps=4", "generator.batch_syn=8", method=method)
    expert, start_epoch, plans = run.draw()
    start = expert.parameters_at(start_epoch, run.device)
    target = expert.parameters_at(start_epoch + 2, run.device)
    results = []
    for unroll in (unroll_full, unroll_checkpointed):
        run.optimizer.zero_grad()
        loss = unroll(run.step_fn, start, plans,
                      lambda final: matching_loss(final, start, target, run.gen.parameter_selection,
                                                  run.gen.selection_ratio), run.leaves)
        results.append((loss, [leaf.grad.clone() for leaf in run.leaves]))
    (loss_full, grads_full), (loss_ckpt, grads_ckpt) = results
    assert torch.allclose(loss_full, loss_ckpt, rtol=1e-5, atol=0)
    for full, ckpt in zip(grads_full, grads_ckpt):
        assert full.abs().sum() > 0
        assert ((full - ckpt).norm() / full.norm()) < 1e-5


# ---- the optimiser and the start window --------------------------------------------------------------

def test_masked_sgd_is_torch_sgd_when_accepted_and_a_no_op_otherwise():
    p = torch.randn(5, requires_grad=True)
    q = p.detach().clone().requires_grad_(True)
    ours, reference = MaskedSGD([(p, 0.1, 0.5)]), torch.optim.SGD([q], lr=0.1, momentum=0.5)
    for accept, grad in ((True, torch.randn(5)), (True, torch.randn(5)), (False, torch.randn(5)), (True, torch.randn(5))):
        p.grad, before, buffer = grad.clone(), p.detach().clone(), ours.buffers[0].clone()
        ours.step(torch.tensor(accept))
        if accept:
            q.grad = grad.clone()
            reference.step()
            assert torch.allclose(p, q)
        else:
            assert torch.equal(p.detach(), before) and torch.equal(ours.buffers[0], buffer)


def test_start_window_grows_from_initial_to_max(tmp_path):
    generator, _ = setup(tmp_path, "generator.max_start_epoch=2", "generator.start_window.initial=1",
                         "generator.start_window.grow_until=4", "budget.tm_expert_train_epochs=4")
    assert [generator.start_epoch_bound(i) for i in (0, 3, 4, 100)] == [1, 1, 2, 2]
    with pytest.raises(UserError, match="generator.max_start_epoch: 9 with expert_epochs=2 needs experts trained at "
                                        "least 10 epochs"):
        setup(tmp_path, "generator.max_start_epoch=9")


# ---- expert trajectories -----------------------------------------------------------------------------

def trajectories(tmp_path, cache, *overrides, method="mtt"):
    ctx = tiny_context(tmp_path, f"method={method}", "ipc=2", f"cache.dir={cache}", *overrides)
    return ctx.roles.role("experts"), ctx


def test_experts_trained_in_two_shards_equal_the_unsharded_experts(tmp_path, monkeypatch):
    sharded = tmp_path / "sharded"
    for index in (0, 1):
        experts, ctx = trajectories(tmp_path, sharded, f"roles.experts.shard.index={index}",
                                    "roles.experts.shard.count=2", "budget.tm_num_experts=3",
                                    "schedule.stop_after=prepare")  # a shard job only prepares
        assert experts.shard_members() == [index, index + 2][:2 - index] and experts.partial
        experts.prepare(ctx)
        if index == 0:  # expert 1 is the other shard's, which has not run yet
            with pytest.raises(UserError, match=r"experts \[1\] are not in the cache yet"):
                experts.materialise(ctx)
    experts, ctx = trajectories(tmp_path, tmp_path / "whole", "budget.tm_num_experts=3")
    whole, _ = experts.materialise(ctx)
    experts, ctx = trajectories(tmp_path, sharded, "budget.tm_num_experts=3")
    monkeypatch.setattr(ExpertTrajectories, "train_expert", lambda *a: pytest.fail("the merge run retrained"))
    merged, _ = experts.materialise(ctx)
    for a, b in zip(whole, merged):
        assert a.path != b.path and a.epochs == 3
        assert all(torch.equal(a.parameters_at(e, "cpu"), b.parameters_at(e, "cpu")) for e in range(4))
    assert not torch.equal(whole[0].parameters_at(-1, "cpu"), whole[1].parameters_at(-1, "cpu"))
    assert not torch.equal(whole[0].parameters_at(0, "cpu"), whole[0].parameters_at(-1, "cpu"))


def test_expert_cache_key_records_the_precision_that_ran(tmp_path):
    """bf16 experts (CUDA, or a CPU with bf16 units) never answer for fp32 ones, nor the other way round."""
    keys = {}
    for amp in (True, False):
        experts, ctx = trajectories(tmp_path, tmp_path / "cache", f"roles.experts.amp={amp}")
        keys[amp] = experts.expert_spec(ctx, 0)
        assert "amp" not in keys[amp]["train"]  # the switch alone would read the same on hosts that ignore it
    assert keys[False]["precision"] == "fp32"
    assert keys[True]["precision"] == ("bf16" if bf16_applies(torch.device("cpu"), True, on_cpu=True) else "fp32")


def test_curriculum_expert_cache_key_records_the_precision_of_its_scoring_networks(tmp_path):
    """PAD's EL2N networks train in bf16 where the experts do: their precision is part of the expert's key."""
    keys = {}
    for amp in (True, False):
        experts, ctx = trajectories(tmp_path, tmp_path / "cache", f"roles.experts.curriculum.scorer.amp={amp}",
                                    method="pad")
        keys[amp] = experts.expert_spec(ctx, 0)["curriculum"]["scorer"]["networks"][0]
        assert "amp" not in keys[amp]["train"]
    assert keys[False]["precision"] == "fp32"
    assert keys[True]["precision"] == ("bf16" if bf16_applies(torch.device("cpu"), True, on_cpu=True) else "fp32")


def test_an_interrupted_expert_resumes_to_the_same_trajectory(tmp_path, monkeypatch):
    experts, ctx = trajectories(tmp_path, tmp_path / "straight", "budget.tm_num_experts=1")
    straight = experts.materialise(ctx)[0][0]

    experts, ctx = trajectories(tmp_path, tmp_path / "resumed", "budget.tm_num_experts=1")
    save = ExpertTrajectories._save_epoch

    def crash_after_epoch_two(folder, epoch, model):
        save(folder, epoch, model)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(ExpertTrajectories, "_save_epoch", staticmethod(crash_after_epoch_two))
    with pytest.raises(KeyboardInterrupt):
        experts.prepare(ctx)
    partial = ctx.cache.entry(CACHE_KIND, experts.expert_spec(ctx, 0)).with_suffix(".partial")
    assert sorted(p.name for p in partial.iterdir()) == [f"epoch_00{e}.safetensors" for e in range(3)]
    monkeypatch.setattr(ExpertTrajectories, "_save_epoch", staticmethod(save))
    torch.manual_seed(999)  # whatever happened in between must not matter
    resumed = experts.materialise(ctx)[0][0]
    assert sorted(p.name for p in resumed.path.parent.iterdir()) == [QUALITY_FILE, "spec.json", TRAJECTORY_FILE]
    assert all(torch.equal(straight.parameters_at(e, "cpu"), resumed.parameters_at(e, "cpu")) for e in range(4))


def test_curriculum_experts_are_other_cache_entries_and_see_the_scheduled_subsets(tmp_path, monkeypatch):
    seen = []
    real_train = experts_module.train_classifier

    def recording(model, images, labels, *args, **kwargs):
        seen.append(torch.bincount(labels, minlength=10).tolist())
        return real_train(model, images, labels, *args, **kwargs)

    monkeypatch.setattr(experts_module, "train_classifier", recording)
    experts, ctx = trajectories(tmp_path, tmp_path / "cache", "budget.tm_num_experts=1", method="pad")
    assert experts.curriculum is not None
    experts.prepare(ctx)
    # smoke curriculum: add_end 1, remove 2 / 2 (ratios 0.1, 0.2) over the 27 training images per class
    # (30 less the held-out tenth)
    assert seen == [[20] * 10, [27] * 10, [27] * 10]
    plain, _ = trajectories(tmp_path, tmp_path / "cache", "budget.tm_num_experts=1")
    assert plain.expert_spec(ctx, 0) != experts.expert_spec(ctx, 0)


def test_trajectory_rows_are_read_from_disk(tmp_path):
    experts, ctx = trajectories(tmp_path, tmp_path / "cache", "budget.tm_num_experts=1")
    trajectory = experts.materialise(ctx)[0][0]
    reopened = Trajectory(trajectory.path)
    model = create_model("convnet", 1, 10, (8, 8))
    assert reopened.num_parameters == sum(p.numel() for p in model.parameters())
    assert torch.equal(reopened.parameters_at(-1, "cpu"), reopened.parameters_at(3, "cpu"))


# ---- DATM initialisation -------------------------------------------------------------------------------

def test_datm_soft_labels_start_as_the_correct_experts_mean_logits(tmp_path):
    _, _, run = started(tmp_path, method="datm")
    logits = run.expert_logits(run.images.detach())
    assert torch.allclose(run.label_logits.detach(), logits)
    from distillkit.training import predict

    every = torch.stack([predict(run.expert_network(t, -1), run.images.detach()) for t in run.trajectories])
    right = every.argmax(2) == run.hard_labels
    for i in range(len(run.images)):
        expected = every[right[:, i], i].mean(0) if right[:, i].any() else every[:, i].mean(0)
        assert torch.allclose(logits[i], expected, atol=1e-5)


# ---- the loop: threshold, resume, pipeline -------------------------------------------------------------

def test_loss_threshold_blocks_updates(tmp_path):
    _, _, run = started(tmp_path, "generator.loss_threshold=0.0")
    before = run.images.detach().clone(), run.syn_lr.detach().clone()
    run.step()
    assert torch.equal(run.images.detach(), before[0]) and torch.equal(run.syn_lr.detach(), before[1])
    assert run.window[1] == 0  # counted as not accepted


def test_the_learned_lr_stops_at_zero_when_an_update_would_carry_it_below(tmp_path):
    _, _, run = started(tmp_path)
    sgd_step = run.optimizer.step

    def overshooting(accept):  # an SGD step on α larger than α (seen on digits without augmentation: α −0.017)
        sgd_step(accept)
        run.syn_lr.data -= 1.0

    run.optimizer.step = overshooting
    run.step()
    assert run.syn_lr.detach() == 0 and torch.isfinite(run.images).all()
    run.optimizer.step = sgd_step
    run.step()  # α = 0 still has a gradient (the student's steps scale with it): it can recover
    assert run.syn_lr.grad != 0


def test_resumed_run_gives_the_same_set_as_an_uninterrupted_one(tmp_path):
    common = ("generator.checkpoint_every=2", "generator.log_every=1")
    generator, ctx = setup(tmp_path / "straight", "generator.iterations=4", *common, method="datm")
    straight = generator(ctx)
    generator, ctx = setup(tmp_path / "split", "generator.iterations=2", *common, method="datm")
    generator(ctx)
    torch.manual_seed(123)
    generator, ctx = setup(tmp_path / "split", "generator.iterations=4", *common, method="datm")
    resumed = generator(ctx)
    assert torch.equal(straight.images, resumed.images) and torch.equal(straight.lr, resumed.lr)
    assert torch.equal(straight.soft_labels, resumed.soft_labels)
    generator, ctx = setup(tmp_path / "split", "generator.iterations=4", "generator.lr_img=5", method="datm")
    with pytest.raises(UserError, match=r"other settings \(lr_img: 100.0 -> 5.0\)|other settings \(lr_img"):
        generator(ctx)


@pytest.mark.parametrize("method", ["mtt", "datm", "pad"])
def test_smoke_run_through_the_pipeline_writes_valid_artefacts(tmp_path, method):
    results = execute(compose(*TINY, f"method={method}", "ipc=2"), tmp_path)
    assert results["method"] == method and results["images_per_class"] == [2] * 10
    assert json.loads((tmp_path / "results.json").read_text())["accuracy"]["runs"]
    distilled = SyntheticSet.load(tmp_path / "distilled.safetensors")
    assert distilled.images.shape == (20, 1, 8, 8) and torch.isfinite(distilled.images).all()
    assert distilled.lr is not None and results["eval_lr"] == pytest.approx(float(distilled.lr))
    assert (distilled.soft_labels is not None) == (method != "mtt")
    assert results["labels"] == ("hard" if method == "mtt" else "soft")
    assert (tmp_path / CHECKPOINT_NAME).is_file() and (tmp_path / "grid.png").is_file()


def test_a_shard_job_trains_its_experts_and_stops(tmp_path):
    shard = ("method=mtt", "roles.experts.shard.index=1", "roles.experts.shard.count=2")
    results = execute(compose(*TINY, *shard, "schedule.stop_after=prepare"), tmp_path)
    assert results["status"] == "prepared" and "accuracy" not in results
    assert not (tmp_path / "distilled.safetensors").exists()
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "prepared"
    # a shard job that would go on to distil from half the experts: refused when the run is planned
    with pytest.raises(UserError, match="schedule.stop_after: roles.experts trains only a shard"):
        pipeline.plan(compose(*TINY, *shard))
