"""Why D2C's selection does (not) lower a diffusion model's FID: the FID of the selected **real** images
themselves, against the test split, in the generative evaluator's features (no diffusion model trained).

    DISTILLKIT_CACHE=/tmp/dk_roles python scripts/d2c_subset_fid.py dataset=fashion_mnist ipc=100 \\
        [--ratios 0.3 0.5 0.7 0.85 1.0] [--random-draws 5]

A generator trained on a subset can at best reproduce that subset's distribution, so a subset that sits further
from the test distribution than a random one starts behind. The run's scores (``scorer=diffusion_difficulty``,
read from the cache like a ``d2c`` run does, or computed and cached) rank each class; for each interval
``ratio`` (the span of the class's easy→hard order that ranks 0, k, 2k… cover), each ablation order, and
``--random-draws`` random subsets of the same size, prints the subset's FID against the test split and its
mean score quantile within its class (0 easiest, 1 hardest).
"""

from __future__ import annotations

import argparse
import json

import torch

from distillkit.config import compose_config
from distillkit.evaluators.generative import FrechetDistance, JudgeFeatures
from distillkit.generators.real import RealPool
from distillkit.run import make_context, plan
from distillkit.samplers.interval import IntervalSampler
from distillkit.selection import random_per_class, seeded, within_class_quantiles
from distillkit.stages import Metric
from distillkit.tracking import NoTracker

JUDGE = "judge"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.85, 1.0])
    parser.add_argument("--random-draws", type=int, default=5)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    cfg = compose_config(["tracker=none", "method=d2c_select_only", *args.overrides])
    the_plan = plan(cfg)
    ctx = make_context(cfg, None, the_plan.roles, NoTracker())
    pool = RealPool()(ctx)
    scores = the_plan.stages.scorer(pool, ctx)
    quantile = within_class_quantiles(scores.pool.float().cpu(), pool.labels.cpu())
    features = JudgeFeatures(ctx.role(JUDGE), pool.images[:1])
    with ctx.final_evaluation("scripts/d2c_subset_fid.py"):
        fid = FrechetDistance(features, ctx.test_images, 500)

    def row(name: str, picks: torch.Tensor) -> dict:
        result = {"subset": name, "fid_held_out": fid(pool.images[picks]),
                  "mean_quantile": float(quantile[picks.cpu()].mean())}
        print(f"{name:28s} FID {result['fid_held_out']:.5f}  mean quantile {result['mean_quantile']:.3f}", flush=True)
        return result

    rows = [row(f"random draw {s}", random_per_class(pool, ctx.ipc, ctx.data.num_classes, seeded(s)))
            for s in range(args.random_draws)]
    draws = Metric.of([r["fid_held_out"] for r in rows])  # mean ± population std, as in every results.json
    print(f"{'random':28s} FID {draws.mean:.5f} ± {draws.std:.5f}")
    rows += [row(f"interval ratio {r:g}", IntervalSampler(ratio=r)(pool, scores, ctx)) for r in args.ratios]
    rows += [row(order, IntervalSampler(order=order)(pool, scores, ctx)) for order in ("easiest", "centre_out", "hardest")]
    print(json.dumps({"dataset": ctx.dataset_identity, "ipc": ctx.ipc, "scorer": str(cfg.scorer._target_),
                      "rows": rows}, default=str))


if __name__ == "__main__":
    main()
