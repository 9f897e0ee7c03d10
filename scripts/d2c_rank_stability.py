"""How stable D2C's diffusion-difficulty ranking is in |T| (the paper gives no value): what sets
``budget.d2c_score_timesteps``.

    python scripts/d2c_rank_stability.py budget=smoke roles.diffusion.train.steps=800   # any run overrides
    python scripts/d2c_rank_stability.py --timesteps 2 5 10 20 50 --seeds 3 dataset=fashion_mnist

Scores every real training image under the run's diffusion role (trained and cached as a run would) at each
|T| with ``--seeds`` noise seeds, and prints per |T|, averaged over classes:

* ``seeds ρ``: Spearman correlation of the per-class rankings of two noise seeds (the ranking's noise);
* ``ref ρ``: Spearman correlation with the reference ranking (the largest |T|, averaged over the seeds);
* ``picks``: the share of the interval sampler's picks (``--ipc``, ratio 0.7) two seeds agree on (chance:
  ipc / N_class: the exact images at ranks 0, k, 2k… are sensitive to any swap near those ranks);
* ``band``: how far one seed's picks sit, in the other seed's ranking, from where the first put them (mean
  |quantile difference| within the class; 0 = the same part of the easy→hard order).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch

from distillkit.cli import compose_config
from distillkit.generators.real import RealPool
from distillkit.run import make_context, plan
from distillkit.samplers.interval import IntervalSampler
from distillkit.selection import within_class_quantiles
from distillkit.stages import Scores
from distillkit.tracking import NoTracker


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = (x.argsort().argsort().double() for x in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def per_class_mean(labels: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    classes = labels.unique()
    return sum(spearman(a[labels == c], b[labels == c]) for c in classes) / len(classes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, nargs="+", default=[2, 5, 10, 20, 50])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()

    cfg = compose_config(["tracker=none", "method=d2c_select_only", f"ipc={args.ipc}", *args.overrides])
    ctx = make_context(cfg, None, plan(cfg).roles, NoTracker())
    model = ctx.role("diffusion")
    pool = RealPool()(ctx)
    sampler = IntervalSampler()
    scores, seconds = {}, {}
    for t in args.timesteps:
        begin = time.perf_counter()
        scores[t] = [model.denoising_error(pool.images, pool.labels, t, seed, args.batch_size).float().cpu()
                     for seed in range(args.seeds)]
        seconds[t] = (time.perf_counter() - begin) / args.seeds
    labels = pool.labels.cpu()
    reference = torch.stack(scores[max(args.timesteps)]).mean(0)
    rows = []
    for t in args.timesteps:
        pairs = list(itertools.combinations(scores[t], 2))
        picks = [sampler(pool, Scores(s.to(ctx.device)), ctx).cpu() for s in scores[t]]
        agree = [len(set(a.tolist()) & set(b.tolist())) / len(a) for a, b in itertools.combinations(picks, 2)]
        q = [within_class_quantiles(s, labels) for s in scores[t]]
        band = [float((q[i][picks[i]] - q[j][picks[i]]).abs().mean())
                for i, j in itertools.permutations(range(len(q)), 2)]
        rows.append({"timesteps": t, "seeds_rho": sum(per_class_mean(labels, a, b) for a, b in pairs) / len(pairs),
                     "reference_rho": sum(per_class_mean(labels, s, reference) for s in scores[t]) / len(scores[t]),
                     "picks_agree": sum(agree) / len(agree), "band_shift": sum(band) / len(band),
                     "seconds": seconds[t]})
        print(f"|T| {t:3d}  seeds ρ {rows[-1]['seeds_rho']:.3f}  ref ρ {rows[-1]['reference_rho']:.3f}  "
              f"picks {rows[-1]['picks_agree']:.2f}  band {rows[-1]['band_shift']:.3f}  "
              f"{seconds[t]:.1f} s per scoring of {len(pool)} images")
    print(json.dumps({"dataset": ctx.dataset_identity, "images": len(pool), "roles": ctx.roles.report,
                      "rows": rows}, default=str))


if __name__ == "__main__":
    main()
