"""Paired baselines for the classifier evaluator (``evaluator.baselines: [random, full]``) and the fair
metrics computed against them (:mod:`distillkit.fairness`).

* ``random``: for evaluation seed ``s``, ``ipc`` real training images per class drawn with seed ``s`` (at
  ``s`` = the run seed, the very subset ``method=random`` selects), trained with the evaluator's protocol,
  hard labels and its own lr (``baselines_lr: evaluator``; or, with ``baselines_lr: set``, the lr the set
  trained at: a trajectory-matching set's learned lr, so that the two rows differ in their images only),
  network seed ``s``. Drawing the subset per seed makes the interval cover the
  luck of the draw as well as the initialisation: the gain is over random selection, not over one subset.
* ``full``: the whole training set under ``method=full``'s protocol (``full_epochs``, ``full_min_steps``,
  ``full_dsa``, from the budget as in ``conf/method/full.yaml``), network seed ``s``.

Each (baseline, seed) is one cache entry (:mod:`distillkit.cache`, kind ``baseline``) keyed by the dataset's
identity, the precision, the model and the protocol's fingerprint, so a sweep over methods trains each
baseline once, and a change of protocol (epochs, augmentation, seeds…) trains it again.

Only the evaluator's first model (the one ``accuracy`` reports) gets baselines. A set with soft labels is
also trained with its hard labels (HLR asks for them) and its IOR and gain are measured on those hard labels:
the random baseline has no soft labels, and comparing soft against hard would credit the labels, not the
images (DD-Ranking's point). ``fair_ars`` trains the set and the random baseline once more without
augmentation for ARS.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
from pathlib import Path

from distillkit import fairness
from distillkit.cache import cache_spec
from distillkit.data.synthetic import SyntheticSet
from distillkit.selection import random_per_class, seeded
from distillkit.stages import EvalReport, Metric

log = logging.getLogger("distillkit")

BASELINES = ("random", "full")
# the random baseline's lr: the evaluator's (lr, or its lr_grid's pick) | the one the set trained at
BASELINE_LRS = ("evaluator", "set")
CACHE_KIND = "baseline"


def variant(evaluator, **changes):
    """A copy of the classifier evaluator with some protocol fields changed and no baselines of its own."""
    other = copy.copy(evaluator)
    other.baselines, other.fair_ars = (), False
    for name, value in changes.items():
        if not hasattr(other, name):
            raise AttributeError(name)
        setattr(other, name, value)
    return other


def evaluate(evaluator, syn_set: SyntheticSet, ctx) -> list[float]:
    """Per-seed accuracies of the evaluator's first model on ``syn_set``, without a progress file (it would
    replace the run's own; the cache keeps the baselines)."""
    return evaluator(syn_set, dataclasses.replace(ctx, run_dir=None)).metrics["accuracy"].runs


def baseline_runs(name: str, evaluator, ctx) -> list[float]:
    """Per-seed accuracies of baseline ``name`` (random | full), one cache entry per seed."""
    first = evaluator.models[:1]
    if name == "random":
        base = variant(evaluator, models=first, labels="hard", soft_source="stored")
    else:
        base = variant(evaluator, models=first, labels="hard", soft_source="stored",
                       spec=dataclasses.replace(evaluator.spec, epochs=evaluator.full_epochs,
                                                min_steps=evaluator.full_min_steps),
                       dsa_strategy=evaluator.dsa_strategy if evaluator.full_dsa else None)
    runs = []
    for s in range(evaluator.seed, evaluator.seed + evaluator.num_seeds):
        one = variant(base, seed=s, num_seeds=1)
        spec = cache_spec(ctx.dataset_identity, evaluator.precision(ctx), baseline=name, seed=s,
                          ipc=ctx.ipc if name == "random" else None, model=first[0],
                          protocol=one.protocol(None, ctx))

        def build(folder: Path, one=one, s=s) -> None:
            pool = SyntheticSet(ctx.train_images, ctx.train_labels)
            if name == "random":
                kept = random_per_class(pool, ctx.ipc, ctx.data.num_classes, seeded(s))
                pool = pool.subset(kept)
            log.info("baseline %s seed %d: training (%d images); cached for later runs", name, s, len(pool))
            (folder / "accuracy.json").write_text(json.dumps({"accuracy": evaluate(one, pool, ctx)[0]}))

        folder = ctx.cache.get_or_create(CACHE_KIND, spec, build)
        runs.append(json.loads((folder / "accuracy.json").read_text())["accuracy"])
    return runs


def add_fair_metrics(evaluator, distilled, report: EvalReport, ctx) -> None:
    """Train (or read) the configured baselines and add the fair metrics to ``report`` in place:
    ``gain_over_random`` (with its paired interval), ``ior``, ``hlr``, ``lrs`` and, with ``fair_ars``,
    ``ars``; units and what was compared in ``details["fair_metrics"]``."""
    mode = evaluator.fair_metrics
    syn = report.metrics["accuracy"].runs
    soft = report.details.get("labels") == "soft"
    one_model = evaluator.models[:1]
    if soft:  # the same images with their hard labels, at the set's lr (HLR, and a label-fair IOR)
        syn_hard = evaluate(variant(evaluator, models=one_model, labels="hard", soft_source="stored"), distilled, ctx)
    else:
        syn_hard = syn
    protocols = {"random": evaluator, "full": evaluator}
    if evaluator.baselines_lr == "set":  # the random baseline at the lr the set trained at, not its own
        protocols["random"] = variant(evaluator, spec=dataclasses.replace(evaluator.spec, lr=report.details["eval_lr"]),
                                      lr_grid=[])
    base = {name: baseline_runs(name, protocols[name], ctx) for name in evaluator.baselines}
    metrics: dict[str, Metric] = {}
    details = {"mode": mode, "units": fairness.UNITS[mode], "weight": fairness.DEFAULT_WEIGHT,
               "ior_labels": "hard", "baselines": {k: Metric.of(v).as_dict() for k, v in base.items()},
               "baselines_lr": evaluator.baselines_lr}
    if "random" in base:
        details["random_lr"] = protocols["random"].lr_grid or protocols["random"].spec.lr
    if soft:
        metrics["accuracy_hard_labels"] = Metric.of(syn_hard)
    if "random" in base:
        gain = fairness.paired_interval(syn_hard, base["random"], mode)
        metrics["gain_over_random"] = dataclasses.replace(
            Metric.of(fairness.differences(syn_hard, base["random"], mode)), ci=gain.as_dict())
        metrics["ior"] = Metric.of(fairness.ior(syn_hard, base["random"], mode))
    if "full" in base:
        metrics["hlr"] = Metric.of(fairness.hlr(base["full"], syn_hard, mode))
    if "random" in base and "full" in base:
        metrics["lrs"] = Metric.of(fairness.lrs(base["full"], syn_hard, syn_hard, base["random"], mode))
    if evaluator.fair_ars and "random" in base:
        plain = {"models": one_model, "dsa_strategy": None}
        syn_plain = evaluate(variant(evaluator, labels="hard", soft_source="stored", **plain), distilled, ctx)
        random_plain = baseline_runs("random", variant(protocols["random"], **plain), ctx)
        details["ars_runs"] = {"set_without_augmentation": syn_plain, "random_without_augmentation": random_plain}
        metrics["ars"] = Metric.of(fairness.ars(syn_hard, base["random"], syn_plain, random_plain, mode))
    report.metrics.update(metrics)
    report.details["fair_metrics"] = details
