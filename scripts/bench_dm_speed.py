"""Benchmark distribution matching: seconds per DM iteration (one pixel update over every class).

Default setting, the one to compare with the reference main_DM.py: Fashion-MNIST, IPC 10,
ConvNet-3 width 128 (instance norm), 256 real images per class, DSA on.

    python scripts/bench_dm_speed.py --warmup 2 --iterations 10
    python scripts/bench_dm_speed.py --method ddm --device cuda

Prints one JSON object: per-iteration seconds, their median and mean, and the hardware.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from distillkit.cli import compose_config
from distillkit.results import device_name
from distillkit.run import make_context
from distillkit.validation import build
from distillkit.tracking import NoTracker


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", default="dm", choices=["dm", "ddm"])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--batch-real", type=int, default=256)
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--dsa-strategy", default="color_crop_cutout_flip_scale_rotate")
    parser.add_argument("--warmup", type=int, default=2, help="untimed iterations first (allocator, caches)")
    parser.add_argument("--iterations", type=int, default=10, help="timed iterations")
    parser.add_argument("--device", default="auto")
    parser.add_argument("overrides", nargs="*", help="further config overrides, e.g. generator.max_real_per_pass=256")
    args = parser.parse_args()

    cfg = compose_config([f"method={args.method}", f"dataset={args.dataset}", f"ipc={args.ipc}", "tracker=none",
                          f"device={args.device}", f"generator.batch_real={args.batch_real}",
                          f"generator.model={args.model}", f"generator.dsa_strategy={args.dsa_strategy}",
                          f"generator.iterations={args.warmup + args.iterations}", *args.overrides])
    ctx = make_context(cfg, run_dir=None, tracker=NoTracker())
    run = build(cfg.generator, "generator").start(ctx)  # no run directory: no checkpoints, no grids

    for _ in range(args.warmup):
        run.step()
    synchronise(ctx.device)
    seconds = []
    for _ in range(args.iterations):
        start = time.perf_counter()
        run.step()
        synchronise(ctx.device)
        seconds.append(time.perf_counter() - start)
    loss = run.report()  # also the divergence check: a timing of a broken run is worthless

    print(json.dumps({
        "benchmark": "distillkit distribution matching, seconds per iteration",
        "method": args.method, "dataset": args.dataset, "ipc": args.ipc, "model": args.model,
        "batch_real": run.batch_real, "dsa_strategy": args.dsa_strategy, "terms": run.gen.terms,
        "overrides": args.overrides, "classes_per_pass": [g.stop - g.start for g in run.class_groups],
        "warmup": args.warmup, "iterations": args.iterations,
        "seconds_per_iteration": {"median": statistics.median(seconds), "mean": statistics.fmean(seconds),
                                  "min": min(seconds), "max": max(seconds)},
        "per_iteration": [round(s, 4) for s in seconds], "final_window": loss,
        "device": str(ctx.device), "device_name": device_name(ctx.device),
        "amp": run.gen.uses_amp(ctx.device), "compiled": run.probe.compiled, "torch": torch.__version__,
    }, indent=2))


if __name__ == "__main__":
    main()
