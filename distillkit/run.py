"""The pipeline: build the four stages from config, run them, write the artefacts.

``execute(cfg, run_dir)`` is the whole of ``distillkit run``; the Hydra app in ``cli.py`` only
finds the run directory and turns :class:`UserError` into one line on stderr.
"""

from __future__ import annotations

import logging
import platform
import random
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from distillkit.cache import Cache
from distillkit.context import Context
from distillkit.data.augment import ZCA
from distillkit.data.datasets import RealData, dataset_identity, load_dataset
from distillkit.data.synthetic import SyntheticSet
from distillkit.errors import UserError
from distillkit.io import write_json
from distillkit.plots import save_grid
from distillkit.published import published_accuracy

log = logging.getLogger("distillkit")

def validate(cfg: DictConfig) -> None:
    """Top-level values a user may mistype; each problem is one line."""
    ipc = cfg.get("ipc")
    if isinstance(ipc, bool) or not isinstance(ipc, int) or ipc < 1:
        raise UserError(f"ipc must be a positive integer (images per class), got {ipc!r}")
    if isinstance(cfg.get("seed"), bool) or not isinstance(cfg.get("seed"), int):
        raise UserError(f"seed must be an integer, got {cfg.get('seed')!r}")
    resolve_device(cfg.device)


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


@contextmanager
def timed(timings: dict, stage: str):
    start = time.perf_counter()
    yield
    timings[stage] = round(time.perf_counter() - start, 3)


def build(node: DictConfig, **kwargs):
    """``hydra.utils.instantiate`` that lets a stage's :class:`UserError` through unwrapped."""
    from hydra.errors import InstantiationException

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, UserError):
            raise err.__cause__ from None
        raise


def make_tracker(cfg: DictConfig):
    return build(cfg.tracker)


def make_context(cfg: DictConfig, run_dir: Path | None, tracker=None) -> Context:
    device = resolve_device(cfg.device)
    data = prepare_data(cfg.dataset)
    cache = Cache(cfg.cache.dir, enabled=cfg.cache.enabled)
    return Context(cfg, data, device, run_dir, cache, tracker or make_tracker(cfg))


def describe(cfg: DictConfig, device: torch.device) -> str:
    stages = ", ".join(f"{k}={cfg[k]._target_.rsplit('.', 1)[-1]}" for k in ("generator", "scorer", "sampler", "evaluator"))
    return (f"distillkit: method={cfg.method.name} dataset={cfg.dataset.name} ipc={cfg.ipc} seed={cfg.seed} "
            f"budget={cfg.budget.name} device={device}\n  stages: {stages}")


def evaluate_set(distilled: SyntheticSet, ctx: Context, timings: dict) -> dict:
    evaluator = build(ctx.cfg.evaluator)
    with timed(timings, "evaluator"):
        return evaluator(distilled, ctx)


def execute(cfg: DictConfig, run_dir: Path) -> dict:
    """Run the configured method end to end; returns the results written to ``results.json``."""
    validate(cfg)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(int(cfg.seed))
    tracker = make_tracker(cfg)
    timings: dict = {}
    with timed(timings, "data"):
        ctx = make_context(cfg, run_dir, tracker)
    print(describe(cfg, ctx.device), flush=True)
    print(f"  budget: {cfg.budget.name} ({cfg.budget.description})", flush=True)
    tracker.start(cfg, run_dir)

    generator, scorer, sampler = (build(cfg[k]) for k in ("generator", "scorer", "sampler"))
    with timed(timings, "generator"):
        pool = generator(ctx)
    if pool is None:  # the generator's job was preparatory only (e.g. one shard of expert trajectories)
        results = {"method": cfg.method.name, "dataset": cfg.dataset.name, "ipc": int(cfg.ipc),
                   "budget": cfg.budget.name, "seed": int(cfg.seed), "status": "generator_only",
                   "seconds": timings, "device": str(ctx.device), "config": OmegaConf.to_container(cfg, resolve=True)}
        write_json(run_dir / "results.json", results)
        tracker.finish({})
        return results
    with timed(timings, "scorer"):
        scores = scorer(pool, ctx)
    with timed(timings, "sampler"):
        distilled = pool.subset(sampler(pool, scores, ctx)).to("cpu")
    distilled.meta.update({"dataset": dataset_identity(cfg.dataset), "mean": list(ctx.data.mean),
                           "std": list(ctx.data.std), "zca": bool(cfg.dataset.get("zca", False)),
                           "ipc": int(cfg.ipc), "method": cfg.method.name, "classes": ctx.data.classes})
    distilled.meta.pop("source", None)
    set_path = run_dir / "distilled.safetensors"
    distilled.save(set_path)
    grid_path = save_grid(distilled, ctx.data, run_dir / "grid.png")

    metrics = evaluate_set(distilled, ctx, timings)
    published = published_accuracy(cfg.dataset.name, cfg.method.get("published_as", cfg.method.name), int(cfg.ipc))
    results = {
        "method": cfg.method.name, "dataset": cfg.dataset.name, "ipc": int(cfg.ipc), "budget": cfg.budget.name,
        "seed": int(cfg.seed), "accuracy": metrics["accuracy"], "per_model": metrics["per_model"],
        "published": published, "num_images": len(distilled),
        "images_per_class": distilled.per_class_counts(ctx.data.num_classes),
        "labels": metrics["labels"], "eval_lr": metrics["lr"], "seconds": timings,
        "device": str(ctx.device), "device_name": device_name(ctx.device), "torch": torch.__version__,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    write_json(run_dir / "results.json", results)
    tracker.log_metrics({"accuracy/mean": metrics["accuracy"]["mean"], "accuracy/std": metrics["accuracy"]["std"],
                         **{f"seconds/{k}": v for k, v in timings.items()}})
    tracker.log_image("distilled/grid", grid_path)
    tracker.log_artifact(f"distilled-{cfg.method.name}-{cfg.dataset.name}-ipc{cfg.ipc}", "distilled-set", set_path)
    tracker.finish({"accuracy": metrics["accuracy"]["mean"]})
    return results


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def result_line(results: dict, run_dir: Path) -> str:
    if "accuracy" not in results:
        return f"{results['method']} {results['dataset']} ipc={results['ipc']}: {results['status']} -> {run_dir}"
    acc = results["accuracy"]
    published = f" (published {results['published']:.1f})" if results.get("published") is not None else ""
    return (f"{results['method']} {results['dataset']} ipc={results['ipc']}: accuracy {acc['mean']:.2f} ± "
            f"{acc['std']:.2f} % over {len(acc['runs'])} seed(s){published} -> {run_dir}")
