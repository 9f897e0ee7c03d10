"""Benchmark the standard evaluator: seconds to train ConvNet-3 on an IPC-10 Fashion-MNIST set
for 300 epochs (DSA on) and to run the full 10 000-image test pass, per seed.

    python scripts/bench_evaluator.py --seeds 3 --epochs 300 --ipc 10

Prints one JSON object (per-seed train and test seconds, accuracy, hardware).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from distillkit.cli import compose_config
from distillkit.context import build_model
from distillkit.data.augment import DSA
from distillkit.generators.real import RealPool
from distillkit.results import cpu_model
from distillkit.run import make_context, resolve_device
from distillkit.samplers.coreset import RandomSampler
from distillkit.tracking import NoTracker
from distillkit.training import TrainSpec, accuracy, train_classifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    cfg = compose_config([f"dataset={args.dataset}", f"ipc={args.ipc}", "tracker=none", f"device={args.device}"])
    ctx = make_context(cfg, run_dir=None, tracker=NoTracker())
    pool = RealPool()(ctx)
    chosen = pool.subset(RandomSampler()(pool, None, ctx))
    images, labels = chosen.images, chosen.labels
    spec = TrainSpec(epochs=args.epochs)
    rows = []
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        model = build_model("convnet", ctx.data, ctx.device)
        sync = torch.cuda.synchronize if ctx.device.type == "cuda" else (lambda: None)
        sync()
        start = time.perf_counter()
        train_classifier(model, images, labels, spec, augment=DSA(seed=seed))
        sync()
        trained = time.perf_counter()
        acc = accuracy(model, ctx.test_images, ctx.test_labels)
        rows.append({"seed": seed, "train_s": trained - start, "test_s": time.perf_counter() - trained, "accuracy": acc})
    total = [r["train_s"] + r["test_s"] for r in rows]
    device = resolve_device(args.device)
    print(json.dumps({
        "benchmark": "evaluator", "dataset": args.dataset, "ipc": args.ipc, "epochs": args.epochs,
        "images": len(images), "test_images": len(ctx.test_images), "runs": rows,
        "seconds_per_seed_mean": statistics.fmean(total), "seconds_per_seed_std": statistics.pstdev(total),
        "accuracy_mean": statistics.fmean(r["accuracy"] for r in rows),
        "device": str(device), "cpu": cpu_model(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }, indent=2))


if __name__ == "__main__":
    main()
