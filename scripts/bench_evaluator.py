"""Benchmark the standard evaluator's numerics side by side: seconds per seed to train ConvNet-3 on a random
Fashion-MNIST set for 300 epochs (DSA on) and to run the full 10 000-image test pass, for each precision
(``fp32`` | ``bf16``) with and without ``torch.compile`` — the evaluator's ``precision`` and ``compile`` keys.

    python scripts/bench_evaluator.py --ipc 10 50 --seeds 3 --configs fp32 fp32+compile bf16 bf16+compile

The configurations run in turn within each seed (seed 0 of every configuration, then seed 1, …), so a machine
whose speed drifts slows them alike. ``--seeds-for IPC=N`` runs fewer seeds at one IPC. ``torch.compile`` starts
from an empty cache (a fresh TORCHINDUCTOR_CACHE_DIR), so its first seed carries the whole compile time, as in
a fresh evaluation. Prints one JSON object: per seed the wall and CPU seconds of training and testing and
the accuracy; per configuration the means and the speed-up over the first configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch

from distillkit.cli import compose_config
from distillkit.context import build_model
from distillkit.data.augment import DSA
from distillkit.generators.real import RealPool
from distillkit.malloc import MALLOC
from distillkit.results import cpu_model
from distillkit.run import make_context, resolve_device
from distillkit.samplers.coreset import RandomSampler
from distillkit.tracking import NoTracker
from distillkit.training import TrainSpec, accuracy, precision, train_classifier


def spec_of(config: str, epochs: int) -> TrainSpec:
    """``fp32``, ``bf16``, ``fp32+compile``, ``bf16+compile``: the evaluator's TrainSpec for those keys."""
    name, _, extra = config.partition("+")
    if name not in ("fp32", "bf16") or extra not in ("", "compile"):
        raise SystemExit(f"unknown configuration {config!r} (fp32 | bf16, optionally +compile)")
    bf16 = name == "bf16"
    return TrainSpec(epochs=epochs, amp=bf16, amp_on_cpu=bf16, compile=extra == "compile")


def timed(fn, *args, **kwargs):
    """``fn(*args, **kwargs)``, its wall seconds and this thread's CPU seconds (less sensitive to a shared
    machine)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    wall, cpu = time.perf_counter(), time.thread_time()
    out = fn(*args, **kwargs)
    sync()
    return out, time.perf_counter() - wall, time.thread_time() - cpu


def bench_ipc(args, ipc: int, seeds: int) -> dict:
    cfg = compose_config([f"dataset={args.dataset}", f"ipc={ipc}", "tracker=none", f"device={args.device}"])
    ctx = make_context(cfg, run_dir=None, tracker=NoTracker())
    pool = RealPool()(ctx)
    chosen = pool.subset(RandomSampler()(pool, None, ctx))
    images, labels = chosen.images, chosen.labels
    runs = {config: [] for config in args.configs}
    for seed in range(seeds):
        for config in args.configs:
            spec = spec_of(config, args.epochs)
            torch.manual_seed(seed)
            model = build_model("convnet", ctx.data, ctx.device)
            _, train_s, train_cpu = timed(train_classifier, model, images, labels, spec, augment=DSA(seed=seed))
            with ctx.final_evaluation("scripts/bench_evaluator.py"):  # the test pass is what it times
                acc, test_s, test_cpu = timed(accuracy, model, ctx.test_images, ctx.test_labels, 2048, spec.amp,
                                              spec.amp_on_cpu, spec.compile)
            runs[config].append({"seed": seed, "train_s": train_s, "test_s": test_s, "train_cpu_s": train_cpu,
                                 "test_cpu_s": test_cpu, "accuracy": acc})
            print(json.dumps({"ipc": ipc, "config": config, **runs[config][-1]}), flush=True)
    summary = {}
    for config, rows in runs.items():
        wall = [r["train_s"] + r["test_s"] for r in rows]
        cpu = [r["train_cpu_s"] + r["test_cpu_s"] for r in rows]
        accs = [r["accuracy"] for r in rows]
        summary[config] = {
            "precision": precision(ctx.device, spec_of(config, 1).amp, True), "seeds": len(rows),
            "seconds_per_seed_mean": statistics.fmean(wall), "seconds_per_seed_std": statistics.pstdev(wall),
            "cpu_seconds_per_seed_mean": statistics.fmean(cpu),
            "accuracy_mean": statistics.fmean(accs), "accuracy_std": statistics.pstdev(accs), "runs": rows}
    base = summary[args.configs[0]]
    for row in summary.values():
        row["speedup_wall"] = base["seconds_per_seed_mean"] / row["seconds_per_seed_mean"]
        row["speedup_cpu"] = base["cpu_seconds_per_seed_mean"] / row["cpu_seconds_per_seed_mean"]
        row["accuracy_delta"] = row["accuracy_mean"] - base["accuracy_mean"]
    return {"ipc": ipc, "images": len(images), "test_images": len(ctx.data.test_images), "configs": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--ipc", type=int, nargs="+", default=[10])
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--seeds-for", nargs="*", default=[], metavar="IPC=N", help="fewer seeds at one IPC")
    parser.add_argument("--configs", nargs="+", default=["fp32", "fp32+compile", "bf16", "bf16+compile"],
                        help="the first is the baseline of the speed-ups")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    # a cold compile cache: the compiled configurations pay their compile time as a fresh evaluation does
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_evaluator_inductor_")
    seeds_for = {int(k): int(v) for k, v in (item.split("=") for item in args.seeds_for)}
    start = time.perf_counter()
    results = [bench_ipc(args, ipc, seeds_for.get(ipc, args.seeds)) for ipc in args.ipc]
    report = json.dumps({
        "benchmark": "evaluator", "dataset": args.dataset, "epochs": args.epochs, "results": results,
        "wall_s": time.perf_counter() - start, "device": str(resolve_device(args.device)), "cpu": cpu_model(),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "malloc": MALLOC,
    }, indent=2)
    print(report)
    if args.out:
        with open(args.out, "w") as f:
            f.write(report + "\n")


if __name__ == "__main__":
    main()
