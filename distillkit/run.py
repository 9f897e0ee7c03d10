"""One run, from the composed config to the artefacts.

``execute(cfg, run_dir)`` is the whole of ``distillkit run``:

1. :func:`plan` builds every stage, role, the learner and the schedule from the config — each
   constructor checks its own settings (:mod:`distillkit.validation`) — so a bad value anywhere is one
   line before anything works (the CLI also plans every job of a sweep before the first starts);
2. the data is loaded and every stage checks itself against it (``check``);
3. the schedule runs the stages (:mod:`distillkit.schedules`), saving the distilled set as it comes;
4. ``results.json`` is written (:mod:`distillkit.results`) and mirrored to the tracker.

The Hydra app in ``app.py`` only finds the run directory and turns :class:`UserError` into one line.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from pydantic import Field

from distillkit.cache import Cache
from distillkit.context import Context
from distillkit.data.augment import ZCA
from distillkit.data.datasets import RealData, check_dataset, load_dataset
from distillkit.errors import UserError
from distillkit.io import write_json
from distillkit.ledger import as_metrics, cost
from distillkit.plots import save_grid
from distillkit.results import results
from distillkit.roles import Roles
from distillkit.schedules import Artefacts, Schedule, Stages
from distillkit.tracking import Traced
from distillkit.validation import ConfigError, Float, Int, PositiveInt, build, check_settings, plain, with_origin

log = logging.getLogger("distillkit")

@dataclass
class HeldOutSettings:
    """``validation:``: the part of the training data trained roles are measured on."""

    fraction: Annotated[Float, Field(gt=0, lt=1)]  # of every class
    seed: Int


@dataclass
class RunSettings:
    """The types and ranges of the top-level keys of ``conf/config.yaml``."""

    ipc: PositiveInt  # images per class of the distilled set
    seed: Int
    validation: HeldOutSettings


def validate(cfg: DictConfig) -> None:
    """Top-level values a user may mistype, and the dataset's keys; each problem is one line."""
    check_settings(RunSettings, {key: plain(cfg.get(key)) for key in RunSettings.__dataclass_fields__})
    resolve_device(cfg.device)
    check_dataset(cfg.dataset)


def resolve_device(name) -> torch.device:
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"device must be auto, cpu, cuda or cuda:N (got '{name}')") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device={name} but no CUDA device is available (use device=auto or device=cpu)")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prepare_data(dataset_cfg: DictConfig) -> RealData:
    """Load the dataset and, when ``dataset.zca`` is set, whiten train and test with the train fit."""
    data = load_dataset(dataset_cfg)
    if dataset_cfg.get("zca"):
        zca = ZCA(data.train_images, eps=float(dataset_cfg.get("zca_eps", 0.1)))
        data.train_images, data.test_images = zca(data.train_images), zca(data.test_images)
        data.extra["zca"] = zca
    return data


@dataclass
class Plan:
    """Everything a run is made of, built and checked, before any of it works."""

    stages: Stages
    schedule: Schedule
    roles: Roles
    tracker: object


def plan(cfg: DictConfig) -> Plan:
    """Build every stage, role, the learner, the schedule and the tracker (the fail-fast step)."""
    try:
        stages = Stages(*(build(cfg[key], key) for key in ("generator", "scorer", "sampler", "evaluator")),
                        learner=build(cfg.learner, "learner") if cfg.get("learner") else None)
        the_plan = Plan(stages, build(cfg.schedule, "schedule"), Roles(cfg.get("roles")), build(cfg.tracker, "tracker"))
        the_plan.schedule.check(stages, the_plan.roles)
        return the_plan
    except ConfigError as err:
        raise with_origin(err, cfg) from None


def make_context(cfg: DictConfig, run_dir: Path | None = None, roles: Roles | None = None, tracker=None) -> Context:
    """The context for ``cfg`` (roles built from ``cfg.roles`` and no tracker unless given)."""
    from distillkit.tracking import NoTracker

    roles = roles if roles is not None else Roles(cfg.get("roles"))
    tracker = tracker if tracker is not None else NoTracker()
    device = resolve_device(cfg.device)
    data = prepare_data(cfg.dataset)
    cache = Cache(cfg.cache.dir, enabled=cfg.cache.enabled)
    return Context(cfg, data, device, run_dir, cache, tracker, roles)


def check(the_plan: Plan, ctx: Context) -> None:
    """Every stage against the loaded data — still before any stage works."""
    try:
        for stage in the_plan.stages.named().values():
            stage.check(ctx)
    except ConfigError as err:
        raise with_origin(err, ctx.cfg) from None
    known = the_plan.stages.generator.known_smallest_class(ctx)
    if known is not None and the_plan.stages.sampler.keeps_ipc_per_class and known[1] < ctx.ipc:
        raise UserError(f"class {known[0]} has {known[1]} training images, fewer than ipc={ctx.ipc}")


def describe(cfg: DictConfig, the_plan: Plan, device: torch.device) -> str:
    stages = ", ".join(f"{k}={type(s).__name__}" for k, s in the_plan.stages.named().items())
    roles = ", ".join(the_plan.stages.roles()) or "none"
    return (f"distillkit: method={cfg.method.name} dataset={cfg.dataset.name} ipc={cfg.ipc} seed={cfg.seed} "
            f"budget={cfg.budget.name} device={device}\n  schedule: {type(the_plan.schedule).__name__}; stages: "
            f"{stages}; roles: {roles}\n  budget: {cfg.budget.name} ({cfg.budget.description})")


def set_saver(cfg: DictConfig, ctx: Context, run_dir: Path):
    """``save(distilled)``: the set with its metadata to ``distilled.safetensors``, and ``grid.png``."""
    def save(distilled) -> None:
        distilled.meta.update({"dataset": ctx.dataset_identity, "mean": list(ctx.data.mean),
                               "std": list(ctx.data.std), "zca": bool(cfg.dataset.get("zca", False)),
                               "ipc": int(cfg.ipc), "method": cfg.method.name, "classes": ctx.data.classes})
        distilled.meta.pop("source", None)
        distilled.save(run_dir / "distilled.safetensors")
        ctx.tracker.log_image("distilled/grid", save_grid(distilled, ctx.data, run_dir / "grid.png"))
        ctx.tracker.log_artifact(f"distilled-{cfg.method.name}-{cfg.dataset.name}-ipc{cfg.ipc}", "distilled-set",
                                 run_dir / "distilled.safetensors")
    return save


def execute(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the configured method end to end; returns the results written to ``results.json``."""
    validate(cfg)
    the_plan = plan(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(int(cfg.seed))
    artefacts = Artefacts(save_set=None)
    with artefacts.timed("data"):
        ctx = make_context(cfg, run_dir, the_plan.roles, Traced(the_plan.tracker))
    check(the_plan, ctx)
    print(describe(cfg, the_plan, ctx.device), flush=True)
    ctx.tracker.start(cfg, run_dir)
    artefacts.save_set = set_saver(cfg, ctx, run_dir)
    outcome = the_plan.schedule.run(the_plan.stages, ctx, artefacts)
    distilled = outcome.distilled
    ledger = cost(seconds=artefacts.seconds, forwards=ctx.roles.forwards, device=ctx.device,
                  set_file=None if distilled is None else run_dir / "distilled.safetensors",
                  images_generated=artefacts.images_generated)
    payload = results(
        method=cfg.method.name, dataset=cfg.dataset.name, ipc=int(cfg.ipc), status=outcome.status,
        report=outcome.report, roles=ctx.roles.report, seconds=artefacts.seconds, device=ctx.device,
        published_as=cfg.method.get("published_as", cfg.method.name), budget=cfg.budget.name, seed=int(cfg.seed),
        num_images=None if distilled is None else len(distilled),
        images_per_class=None if distilled is None else distilled.per_class_counts(ctx.data.num_classes),
        cost=ledger, test_set_readers=sorted(set(ctx.test_reads)), trace=ctx.tracker.trace,
        config=OmegaConf.to_container(cfg, resolve=True))
    write_json(run_dir / "results.json", payload)
    report = outcome.report
    if report is not None:
        metric = report.primary_metric
        ctx.tracker.log_metrics({f"{report.primary}/mean": metric.mean, f"{report.primary}/std": metric.std,
                                 **{f"seconds/{k}": v for k, v in artefacts.seconds.items()}})
    ctx.tracker.log_metrics(as_metrics(ledger))
    ctx.tracker.finish({report.primary: report.primary_metric.mean} if report is not None else {})
    return payload

