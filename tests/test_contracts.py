"""Every registered stage held to its contract (``distillkit/stages.py``), in the manner of diffusers'
``PipelineTesterMixin``: each option of the ``generator``, ``scorer``, ``sampler``, ``evaluator`` and
``learner`` groups, and each method, is read from ``conf/`` (``group_options``), so a new YAML is tested
here without a line of its own. Each is built from its config node with ``validation.build`` and run
through a real context on tiny digits (``support.tiny_context``, ipc 2). Every method is planned and checked
on the data; one that no other fast test runs end to end also runs end to end here (all of them with
``-m slow``). Resume equality of DM and TM is in their own files, of the rounds schedule in test_rounds.py.

What every stage owes: it names only roles the config defines; ``check(ctx)`` accepts valid data; its
output has the contract's shape; and a copy restored from its ``state_dict`` (through ``torch.save`` /
``torch.load(weights_only=True)``, as the ``rounds`` checkpoint stores it) continues exactly as the
original does. Options that need a partner are paired explicitly below, never skipped.
"""

from __future__ import annotations

import math

import copy
import dataclasses
import io
from functools import lru_cache

import pytest
import torch
from omegaconf import OmegaConf

from distillkit.config import config_dir, group_options
from distillkit.data.synthetic import SyntheticSet
from distillkit.errors import UserError
from distillkit.generators.real import RealPool
from distillkit.roles import Roles
from distillkit.run import check, execute, make_context, plan
from distillkit.selection import random_per_class, seeded
from distillkit.stages import EvalReport, Evaluator, Generator, Learner, Sampler, Scorer, Scores
from distillkit.validation import ConfigError, build
from support import ROUNDS, TINY, compose, tiny_context

IPC = 2
CLASSES = 10  # digits

# Settings that only make an option quick enough for a unit test; the contract does not depend on them.
QUICK = {"scorer=el2n": ("scorer.num_models=1", "scorer.epochs=1"),
         "scorer=grand": ("scorer.num_models=1",)}

# Options that need a partner in another group to run at all.
PARTNERS = {"generator=teacher_inversion": ("model@roles.teacher.model=convnet_bn",)}  # inverts BN statistics

# Samplers that choose by the data alone: the run seed must not change their choice. Every other
# sampler draws at random and must choose differently under another run seed.
SEED_FREE_SAMPLERS = {"all", "herding", "kcenter", "interval"}


def context(tmp_path, group: str, name: str, *overrides):
    option = f"{group}={name}"
    return tiny_context(tmp_path, f"ipc={IPC}", option, *QUICK.get(option, ()), *PARTNERS.get(option, ()), *overrides)


def built(tmp_path, group: str, name: str, kind: type, *overrides):
    """Option ``name`` of ``group`` built from its config node in a tiny context, held to what every stage
    owes before it works; ``(stage, context)``."""
    ctx = context(tmp_path, group, name, *overrides)
    stage = build(ctx.cfg[group], group)
    assert isinstance(stage, kind)
    assert_fits_the_config(stage, ctx)
    return stage, ctx


def reseeded(ctx, seed: int):
    """``ctx`` with another run seed (same data, same roles)."""
    cfg = copy.deepcopy(ctx.cfg)
    cfg.seed = seed
    return dataclasses.replace(ctx, cfg=cfg)


def through_checkpoint(state: dict) -> dict:
    """``state`` as the rounds checkpoint gives it back: saved, then loaded with ``weights_only=True``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def restored(stage, group: str, ctx):
    """A fresh build of ``stage``'s config with its state loaded."""
    copy_ = build(ctx.cfg[group], group)
    copy_.load_state_dict(through_checkpoint(stage.state_dict()))
    return copy_


def assert_fits_the_config(stage, ctx) -> None:
    """Names only roles ``cfg.roles`` defines, and accepts valid data."""
    assert isinstance(stage.roles, tuple) and all(isinstance(r, str) for r in stage.roles)
    assert set(stage.roles) <= set(ctx.cfg.roles), f"{type(stage).__name__} names roles {stage.roles}"
    assert stage.check(ctx) is None


def assert_labelled_set(out, ctx, per_class: bool = True) -> None:
    """A SyntheticSet of finite images of the dataset's shape, labels in range, every class ≥ ipc (``per_class``)."""
    assert isinstance(out, SyntheticSet)
    images, labels = out.images, out.labels
    assert images.dtype.is_floating_point and tuple(images.shape[1:]) == (ctx.data.channels, *ctx.data.image_size)
    assert labels.shape == (len(images),) and not labels.dtype.is_floating_point
    assert torch.isfinite(images).all()
    assert 0 <= int(labels.min()) and int(labels.max()) < ctx.data.num_classes
    if per_class:  # a per-class sampler can choose from it
        assert min(out.per_class_counts(ctx.data.num_classes)) >= ctx.ipc
    if out.soft_labels is not None:
        assert out.soft_labels.shape == (len(images), ctx.data.num_classes) and torch.isfinite(out.soft_labels).all()
    if out.lr is not None:
        assert torch.isfinite(out.lr) and float(out.lr) > 0


# ---- generators ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", group_options("generator"))
def test_generator_contract(name, tmp_path):
    generator, ctx = built(tmp_path, "generator", name, Generator)
    out = generator(ctx)
    assert_labelled_set(out, ctx)
    # Restored from its state, a generator makes what the original makes next: the same set for one that
    # made its set (DM / TM continue from their finished checkpoint, pools come from the cache), the same
    # next batch for a stream.
    again = restored(generator, "generator", ctx)(ctx)
    nxt = generator(ctx)
    assert torch.equal(again.images, nxt.images) and torch.equal(again.labels, nxt.labels)
    if name == "real_batches":
        # a stream for the rounds schedule: every call is a new batch of generator.per_class per class
        per_class = ctx.cfg.generator.per_class
        assert out.per_class_counts(CLASSES) == nxt.per_class_counts(CLASSES) == [per_class] * CLASSES
        assert not torch.equal(out.images, nxt.images)


# ---- scorers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", group_options("scorer"))
def test_scorer_contract(name, tmp_path):
    scorer, ctx = built(tmp_path, "scorer", name, Scorer)
    pool = RealPool(pool_factor=3)(ctx)  # 6 real images per class
    scores = scorer(pool, ctx)
    if scores is None:
        assert restored(scorer, "scorer", ctx)(pool, ctx) is None
        return
    assert isinstance(scores, Scores)
    assert scores.pool.shape == (len(pool),) and torch.isfinite(scores.pool).all()
    if scores.real is not None:  # the real training images' scores, one per image, with their labels
        assert scores.real.shape == ctx.train_labels.shape and torch.isfinite(scores.real).all()
        assert torch.equal(scores.real_labels.cpu(), ctx.train_labels.cpu())
    # the same pool scores the same, also by a copy restored from the scorer's state
    assert torch.equal(restored(scorer, "scorer", ctx)(pool, ctx).pool, scores.pool)


# ---- samplers --------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def paired_scorer(sampler: str) -> str:
    """The scorer the first method (by name) that uses ``sampler`` runs it with, else ``none``.

    Samplers that choose by difficulty (difficulty_guided, difficulty_matched, uniform_difficulty) refuse
    ``None`` and need Scores in [0, 1] — and the real images' scores for ``target: real`` — so each sampler
    gets the scorer its methods pair it with (``conf/method/dgs*.yaml``: classifier_difficulty).
    """
    for method in group_options("method"):
        defaults = OmegaConf.load(config_dir() / "method" / f"{method}.yaml").get("defaults", [])
        chosen = {key.split("/")[-1]: value for entry in defaults if OmegaConf.is_dict(entry)
                  for key, value in entry.items()}
        if chosen.get("sampler") == sampler:
            return chosen.get("scorer", "none")
    return "none"


def assert_curriculum_contract(sampler, ctx) -> None:
    """The curriculum sampler orders an expert's epochs (PAD: sampler@roles.experts.curriculum.sampler);
    handed a pool it must refuse with a config error, and its own contract is per-epoch indices."""
    pool = RealPool()(ctx)
    with pytest.raises(ConfigError, match="does not sample a pool"):
        sampler(pool, None, ctx)
    scores = torch.rand(len(pool), generator=seeded(0))
    ordered = sampler.order(scores, pool.labels, CLASSES)
    assert [len(o) for o in ordered] == pool.per_class_counts(CLASSES)
    for epoch in range(sampler.remove_second_epoch + 2):
        chosen = sampler.indices(ordered, epoch)
        assert len(set(chosen.tolist())) == len(chosen) and 0 <= int(chosen.min()) and int(chosen.max()) < len(pool)
        assert min(torch.bincount(pool.labels[chosen], minlength=CLASSES).tolist()) >= 1


@pytest.mark.parametrize("name", group_options("sampler"))
def test_sampler_contract(name, tmp_path):
    sampler, ctx = built(tmp_path, "sampler", name, Sampler, f"scorer={paired_scorer(name)}")
    if name == "curriculum":
        return assert_curriculum_contract(sampler, ctx)
    pool = RealPool()(ctx)  # every real training image: 30 per class
    scorer = build(ctx.cfg.scorer, "scorer")
    scores = scorer(pool, ctx)

    chosen = sampler(pool, scores, ctx)
    assert chosen.dtype == torch.long and chosen.ndim == 1
    assert len(set(chosen.tolist())) == len(chosen), "a sampler picks each pool sample at most once"
    assert 0 <= int(chosen.min()) and int(chosen.max()) < len(pool)
    counts = torch.bincount(pool.labels[chosen].cpu(), minlength=CLASSES).tolist()
    assert counts == (pool.per_class_counts(CLASSES) if name == "all" else [IPC] * CLASSES)

    # seeded: another build with the same run seed chooses the same
    assert torch.equal(build(ctx.cfg.sampler, "sampler")(pool, scores, ctx), chosen)
    # a copy restored from the sampler's state makes the same next choice
    assert torch.equal(restored(sampler, "sampler", ctx)(pool, scores, ctx), sampler(pool, scores, ctx))
    other = build(ctx.cfg.sampler, "sampler")(pool, scores, reseeded(ctx, ctx.seed + 1))
    if name in SEED_FREE_SAMPLERS:
        assert torch.equal(other, chosen), f"{name} is listed as choosing by the data alone"
    else:
        assert not torch.equal(other, chosen), f"{name} ignores the run seed (list it in SEED_FREE_SAMPLERS?)"


# ---- evaluators and learners ---------------------------------------------------------------------

def real_subset(ctx, per_class: int) -> SyntheticSet:
    pool = RealPool()(ctx)
    return pool.subset(random_per_class(pool, per_class, CLASSES, seeded(0)))


def assert_report(report, evaluator) -> None:
    assert isinstance(report, EvalReport)
    assert report.primary == evaluator.primary_metric and report.higher_is_better == evaluator.higher_is_better
    assert all(m.runs and all(map(torch.isfinite, torch.tensor(m.runs))) for m in report.metrics.values())


@pytest.mark.parametrize("name", group_options("evaluator"))
def test_evaluator_contract(name, tmp_path):
    evaluator, ctx = built(tmp_path, "evaluator", name, Evaluator)
    assert evaluator.direction() in ("maximize", "minimize")
    report = evaluator(real_subset(ctx, IPC), ctx)
    assert_report(report, evaluator)
    assert len(report.primary_metric.runs) == ctx.cfg.evaluator.num_seeds
    if not evaluator.assesses_networks:  # it measures sets only: refused by the rounds schedule when planned
        with pytest.raises(UserError):
            evaluator.assess([ctx.build_model("convnet")], ctx)
        with pytest.raises(ConfigError, match="^evaluator: .*not the learner the rounds schedule trains"):
            plan(compose(*TINY, *ROUNDS, f"evaluator={name}"))
        return
    # networks trained elsewhere (a rounds learner's): one run per network
    assessed = evaluator.assess([ctx.build_model("convnet"), ctx.build_model("convnet")], ctx)
    assert_report(assessed, evaluator)
    assert len(assessed.primary_metric.runs) == 2


@pytest.mark.parametrize("name", group_options("learner"))
def test_learner_contract(name, tmp_path):
    learner, ctx = built(tmp_path, "learner", name, Learner, "schedule=rounds")
    learner.start(ctx)
    batch = real_subset(ctx, 3)
    before = [p.detach().clone() for p in learner.model.parameters()]
    feedback = learner.step(batch, ctx)
    assert feedback is None or (feedback.shape == (len(batch),) and torch.isfinite(feedback).all())
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.model.parameters())), "a step trains"
    # restored from its state (network, optimiser, counters), a fresh learner takes the same next step
    copy_ = build(ctx.cfg.learner, "learner")
    copy_.start(dataclasses.replace(ctx, roles=Roles(ctx.cfg.roles)))  # its own network, overwritten by the state
    assert copy_.model is not learner.model
    copy_.load_state_dict(through_checkpoint(learner.state_dict()))
    a, b = learner.step(batch, ctx), copy_.step(batch, ctx)
    assert (a is None and b is None) or torch.equal(a, b)
    assert all(torch.equal(p, q) for p, q in zip(learner.model.parameters(), copy_.model.parameters()))


# ---- resume switches ---------------------------------------------------------------------------------

RESUMABLE = [f"{group}={name}" for group in ("generator", "scorer", "sampler", "evaluator", "learner", "schedule")
             for name in group_options(group) if "resume" in OmegaConf.load(config_dir() / group / f"{name}.yaml")]


@pytest.mark.parametrize("option", RESUMABLE)
def test_every_resume_switch_takes_what_hydra_hands_over(option):
    """``<group>.resume=true`` arrives as a bool (the divergence messages tell users to pass it)."""
    group = option.split("=")[0]
    for value in ("auto", "true", "false"):
        node = compose(*TINY, option, f"{group}.resume={value}")[group]
        assert build(node, group).resume == value
    with pytest.raises(ConfigError, match=f"{group}.resume: input should be 'auto', 'true' or 'false' \\(got 'sometimes'\\)"):
        build(compose(*TINY, option, f"{group}.resume=sometimes")[group], group)


# ---- methods -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", group_options("method"))
def test_every_method_plans_and_checks_on_tiny_data(method, tmp_path):
    """Fast for every method: all its stages build, name configured roles and accept the data."""
    cfg = compose(*TINY, f"method={method}", f"ipc={IPC}")
    the_plan = plan(cfg)
    ctx = make_context(cfg, tmp_path, the_plan.roles)
    check(the_plan, ctx)
    for stage in the_plan.stages.named().values():
        assert_fits_the_config(stage, ctx)


# Methods that run end to end (execute) in their own fast test file run here under `-m slow` only; every
# other method — ddm, and any new YAML — runs end to end in the fast set.
END_TO_END_ELSEWHERE = {"random", "herding", "kcenter", "full",  # test_cli.py
                        "dgs", "dgs_pool_random", "dgs_no_log", "dgs_uniform", "dgs_pool_full",  # test_dgs.py
                        "dm",  # test_distribution_matching.py
                        "mtt", "datm", "pad",  # test_trajectory_matching.py
                        "d2c_select_only",  # test_d2c_select.py
                        "ssdkd", "fast_dfkd"}  # test_ssdkd.py


@pytest.mark.parametrize("method", [pytest.param(m, marks=pytest.mark.slow) if m in END_TO_END_ELSEWHERE else m
                                    for m in group_options("method")])
def test_every_method_runs_end_to_end(method, tmp_path):
    results = execute(compose(*TINY, f"method={method}", f"ipc={IPC}"), tmp_path)
    assert results["status"] == "evaluated" and results["method"] == method
    # the test split is sealed until the final evaluation (a stage reading it earlier raises): only evaluators opened it
    assert results["test_set_readers"] and all(r.endswith(("final test", "(FID, copy threshold)"))
                                               for r in results["test_set_readers"])
    primary = results["primary_metric"]["name"]  # accuracy, or fid_held_out for methods judged generatively
    assert math.isfinite(results["metrics"][primary]["mean"])
    if primary == "accuracy":
        assert 0 <= results["accuracy"]["mean"] <= 100 and results["metrics"]["accuracy"] == results["accuracy"]
    distilled = SyntheticSet.load(tmp_path / "distilled.safetensors")
    rounds = results["config"]["schedule"]["_target_"].endswith("Rounds")  # the set is a replay buffer's content
    assert_labelled_set(distilled, tiny_context(None, f"ipc={IPC}"), per_class=not rounds)
    counts = distilled.per_class_counts(CLASSES)
    assert counts == results["images_per_class"]
    if results["config"]["sampler"]["_target_"].endswith("AllSampler"):
        assert len(set(counts)) == 1  # the generator's whole output, as many per class
    elif rounds:
        # the distilled set is the replay buffer: bounded by its capacity (or a bank that kept everything)
        assert sum(counts) == results["buffer"]["size"] <= (results["buffer"]["capacity"] or math.inf)
    else:
        assert counts == [IPC] * CLASSES
    stages = plan(compose(*TINY, f"method={method}")).stages
    assert set(stages.roles()) <= set(results["roles"])  # each role the stages use reports its quality
