"""The DGS table: difficulty-guided sampling vs its ablations on one generated pool, and real random.

    python scripts/bench_dgs.py                       # Fashion-MNIST, IPC 10, budget=cpu, sampler seeds 0 1 2
    python scripts/bench_dgs.py --budget smoke --dataset digits --out /tmp/bench_dgs   # a wiring check

Rows (every pool row reads the same cached UNet and pool, so the UNet trains once):
  dgs              difficulty-guided sampling with the log transform      (method=dgs)
  dgs_pool_random  ipc per class at random from the pool                  (method=dgs_pool_random)
  dgs_no_log       real difficulty histogram without the log transform    (method=dgs_no_log)
  dgs_pool_full    the whole pool, pool_factor × ipc per class            (method=dgs_pool_full; no sampler seed)
  random           ipc real images per class at random                    (method=random)

Each run is one ``distillkit run`` (e.g. ``distillkit run method=dgs dataset=fashion_mnist ipc=10
budget=cpu sampler.seed=1``) whose accuracy is the mean over the evaluator's seeds; a row is the
mean ± std of that over the sampler seeds. Prints a Markdown table and writes ``table.json`` in --out.
A run directory that already holds results.json is read instead of rerun, so an interrupted table
resumes where it stopped (delete --out, or pick another, to measure afresh).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from distillkit.cli import compose_config
from distillkit.io import write_json
from distillkit.run import execute

ROWS = [
    ("dgs", "DGS (log transform, real target)", True),
    ("dgs_pool_random", "random from the pool", True),
    ("dgs_no_log", "real target, no log transform", True),
    ("dgs_pool_full", "whole pool", False),
    ("random", "random real images", True),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--budget", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sampler seeds")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_dgs"))
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run (key=value)")
    args = parser.parse_args()

    table = []
    for method, label, seeded in ROWS:
        runs = []
        for seed in args.seeds if seeded else args.seeds[:1]:
            run_dir = args.out / f"{method}_seed{seed}"
            seed_override = [f"sampler.seed={seed}"] if seeded else []  # sampler=all has no seed
            cfg = compose_config([f"method={method}", f"dataset={args.dataset}", f"ipc={args.ipc}",
                                  f"budget={args.budget}", "tracker=none", *seed_override, *args.overrides])
            done = run_dir / "results.json"
            if done.is_file():  # an interrupted table resumes: finished runs are read, not redone
                print(f"reusing {done}")
                results = json.loads(done.read_text())
            else:
                results = execute(cfg, run_dir)
            quality = run_dir / "pool_quality.json"
            runs.append({"sampler_seed": seed, "accuracy": results["accuracy"]["mean"], "seconds": results["seconds"],
                         "pool_teacher_accuracy": json.loads(quality.read_text())["teacher_accuracy"]["mean"]
                         if quality.is_file() else None, "run_dir": str(run_dir)})
        accuracies = [r["accuracy"] for r in runs]
        table.append({"method": method, "label": label, "mean": statistics.mean(accuracies),
                      "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0, "runs": runs})

    write_json(args.out / "table.json", {"dataset": args.dataset, "ipc": args.ipc, "budget": args.budget,
                                         "sampler_seeds": args.seeds, "rows": table})
    print(f"\n{args.dataset} IPC {args.ipc}, budget={args.budget}, sampler seeds {args.seeds}\n")
    print("| method | what | accuracy % | runs |\n|---|---|---|---|")
    for row in table:
        print(f"| `{row['method']}` | {row['label']} | {row['mean']:.2f} ± {row['std']:.2f} | {len(row['runs'])} |")
    pool_quality = next((r["pool_teacher_accuracy"] for row in table for r in row["runs"]
                         if r["pool_teacher_accuracy"] is not None), None)
    if pool_quality is not None:
        print(f"\nteacher accuracy on the generated pool: {pool_quality:.2f} %")


if __name__ == "__main__":
    main()
