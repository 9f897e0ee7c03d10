"""Difficulty-guided sampling (DGS, Li et al., ICCV 2025 workshop) and its ablations.

Per class: pick ``ipc`` pool samples whose difficulty histogram follows a target histogram.

* ``log_transform`` corrects a generated pool's bias toward easy samples: ranks ``th_b`` and
  ``th_t`` (searched per class on the pool's scores) clip the scores, which are then stretched
  onto [0, 1] on a log scale. The same ranks transform the real scores of the class.
* ``target: real`` follows the histogram of the real images' (transformed) difficulty;
  ``target: uniform`` spreads the picks evenly over the bins.

Bins are ``[k/B, (k+1)/B)`` with the last one closed. Quotas come from largest-remainder
rounding; a bin of the pool with fewer samples than its quota gives all it has and the rest is
filled uniformly from what is left. See ``docs/methods/dgs.md`` for every decision.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from distillkit.errors import UserError
from distillkit.io import atomic_path, write_json
from distillkit.selection import per_class, seeded
from distillkit.stages import Sampler, Scores
from distillkit.validation import Int, PositiveInt, validated

# Smallest transformed difficulty, and the stand-in for a zero bottom clip (a log needs b > 0).
FLOOR = 1e-4
TARGETS = ("real", "uniform")


def log_transform(scores: np.ndarray, th_b: int, th_t: int) -> np.ndarray:
    """``log(clip(d, b, t) / b) / log(t / b)`` floored at 1e-4, with b the ``th_b``-th smallest
    score (1e-4 when it is 0) and t the ``th_t``-th largest (both 0-based ranks).

    Ranks beyond the array are clamped to its ends. When ``t <= b`` there is no range left to
    stretch (ties, all-zero scores): every score maps to the floor, as ``log(b / b) = 0`` would.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) == 0:
        return scores
    ordered = np.sort(scores)
    bottom = ordered[min(th_b, len(ordered) - 1)]
    bottom = FLOOR if bottom == 0 else bottom
    top = ordered[max(len(ordered) - 1 - th_t, 0)]
    if top <= bottom:
        return np.full(len(scores), FLOOR)
    stretched = np.log(np.clip(scores, bottom, top) / bottom) / np.log(top / bottom)
    return np.maximum(stretched, FLOOR)


def bin_index(scores: np.ndarray, bins: int) -> np.ndarray:
    """The histogram bin of each score in [0, 1]: ``[k/B, (k+1)/B)``, the last bin closed."""
    return np.clip(np.floor(np.asarray(scores) * bins).astype(np.int64), 0, bins - 1)


def histogram(scores: np.ndarray, bins: int) -> np.ndarray:
    return np.bincount(bin_index(scores, bins), minlength=bins)


def kl_bits(p: np.ndarray, q: np.ndarray) -> tuple[int, float]:
    """KL(p ‖ q) in bits as (bins where p > 0 but q = 0, the finite sum over the other bins).

    The pair orders like the true divergence (any unsupported bin makes it infinite) while
    still ranking candidates that all have some infinite term, without NaN or inf.
    """
    p, q = p / p.sum(), q / q.sum()
    both = (p > 0) & (q > 0)
    return int(((p > 0) & (q == 0)).sum()), float(np.sum(p[both] * np.log2(p[both] / q[both])))


def threshold_objective(raw_hist: np.ndarray, transformed: np.ndarray, bins: int) -> tuple[int, float]:
    """``0.5·KL(h_raw ‖ h_log) + 0.5·KL(uniform ‖ h_log)`` over ``bins``-bin histograms of the pool."""
    log_hist = histogram(transformed, bins).astype(np.float64)
    missing_raw, kl_raw = kl_bits(raw_hist.astype(np.float64), log_hist)
    missing_uniform, kl_uniform = kl_bits(np.ones(bins), log_hist)
    return missing_raw + missing_uniform, 0.5 * kl_raw + 0.5 * kl_uniform


def search_thresholds(pool_scores: np.ndarray, ipc: int, bins: int) -> tuple[int, int]:
    """The (th_b, th_t) in ``{0..max(IPC//2, 1) − 1}²`` minimising :func:`threshold_objective`.

    Ties go to the first pair in (th_b, th_t) order, as ``np.argmin`` does in the released code;
    IPC 1 searches {0}² (the released grid is empty there and crashes).
    """
    raw_hist = histogram(pool_scores, bins)
    grid = range(max(ipc // 2, 1))
    return min(itertools.product(grid, grid),
               key=lambda th: threshold_objective(raw_hist, log_transform(pool_scores, *th), bins))


def largest_remainder(weights: np.ndarray, total: int) -> np.ndarray:
    """Integer quotas proportional to ``weights`` that sum to ``total``; leftover units go to the
    largest fractional parts, ties to the lower (easier) bin."""
    scaled = np.asarray(weights, dtype=np.float64) * total / np.sum(weights)
    quota = np.floor(scaled).astype(np.int64)
    order = np.argsort(-(scaled - quota), kind="stable")
    quota[order[:total - int(quota.sum())]] += 1
    return quota


def draw_by_quota(bins_of_samples: np.ndarray, quota: np.ndarray, generator: torch.Generator) -> np.ndarray:
    """Positions drawn without replacement: ``quota[k]`` from bin k (all of it when short), then
    the shortfall uniformly from the samples not yet drawn."""
    chosen = []
    for k, wanted in enumerate(quota):
        members = np.flatnonzero(bins_of_samples == k)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:wanted].numpy()])
    chosen = np.concatenate(chosen)
    left = np.setdiff1d(np.arange(len(bins_of_samples)), chosen)
    shortfall = int(quota.sum()) - len(chosen)
    return np.concatenate([chosen, left[torch.randperm(len(left), generator=generator)[:shortfall].numpy()]])


class DifficultyGuided(Sampler):
    """Choose ``ipc`` pool samples per class whose difficulty histogram follows the target.

    ``log_transform``: stretch scores with per-class searched thresholds (DGS) or use them raw.
    ``target``: ``real`` (the real images' histogram) or ``uniform``. ``bins``: histogram size.
    ``seed`` offsets the run seed.
    """

    @validated
    def __init__(self, log_transform: bool = True, target: Literal[TARGETS] = "real", bins: PositiveInt = 10,
                 seed: Int = 0):
        self.log_transform, self.target, self.bins, self.seed = log_transform, target, bins, seed

    def __call__(self, pool, scores, ctx) -> torch.Tensor:
        pool_scores, real_scores, real_labels = self._read_scores(scores, len(pool))
        generator = seeded(ctx.seed + self.seed)
        chosen, report = [], {}
        for c, idx in per_class(pool, ctx.ipc, ctx.data.num_classes):
            real = None if real_scores is None else real_scores[real_labels == c]
            if self.target == "real" and len(real) == 0:
                raise UserError(f"class {c} has no real training images to take the difficulty target from")
            positions, report[ctx.data.classes[c]] = self.select(pool_scores[idx.cpu().numpy()], real, ctx.ipc,
                                                                 generator)
            chosen.append(idx[torch.from_numpy(positions).to(idx.device)])
        if ctx.run_dir is not None:
            self._save_report(report, ctx)
        return torch.cat(chosen)

    def select(self, raw: np.ndarray, real_raw: np.ndarray | None, ipc: int,
               generator: torch.Generator) -> tuple[np.ndarray, dict]:
        """Positions of ``ipc`` samples of one class's pool scores, and what was done (for the report)."""
        thresholds = search_thresholds(raw, ipc, self.bins) if self.log_transform else None
        guided, real = raw, real_raw
        if thresholds is not None:  # the pool's ranks transform both, each on its own sorted scores
            guided = log_transform(raw, *thresholds)
            real = None if real_raw is None else log_transform(real_raw, *thresholds)
        quota = largest_remainder(histogram(real, self.bins) if self.target == "real" else np.ones(self.bins), ipc)
        positions = draw_by_quota(bin_index(guided, self.bins), quota, generator)
        counts = {name: None if values is None else histogram(values, self.bins).tolist() for name, values in (
            ("pool", guided), ("real", real), ("chosen", guided[positions]),
            ("pool_raw", raw), ("real_raw", real_raw), ("chosen_raw", raw[positions]))}
        thresholds_report = None if thresholds is None else {"th_b": int(thresholds[0]), "th_t": int(thresholds[1])}
        return positions, {"thresholds": thresholds_report, "target": quota.tolist(), **counts}

    def _read_scores(self, scores, pool_size: int):
        """(pool scores, real scores or None, real labels or None) as numpy arrays, checked."""
        if not isinstance(scores, Scores):
            raise UserError("the difficulty-guided sampler needs difficulty scores: use scorer=classifier_difficulty")
        if self.target == "real" and scores.real is None:
            raise UserError("sampler.target=real needs the real images' difficulty: set scorer.score_real=true")
        pool_scores = unit_interval_array(scores.pool, "pool")
        if len(pool_scores) != pool_size:
            raise UserError(f"the scorer gave {len(pool_scores)} scores for a pool of {pool_size}")
        if scores.real is None:
            return pool_scores, None, None
        return pool_scores, unit_interval_array(scores.real, "real"), scores.real_labels.cpu().numpy()

    def _save_report(self, report: dict, ctx) -> None:
        """``difficulty.json`` (thresholds and histograms per class) and ``difficulty.png``."""
        run_dir = Path(ctx.run_dir)
        settings = {"log_transform": self.log_transform, "target": self.target, "bins": self.bins,
                    "seed": ctx.seed + self.seed}
        write_json(run_dir / "difficulty.json", {"sampler": settings, "classes": report})
        plot_path = plot_difficulty(report, self.bins, run_dir / "difficulty.png", transformed=self.log_transform)
        ctx.tracker.log_image("sampler/difficulty", plot_path)


def unit_interval_array(values: torch.Tensor, name: str) -> np.ndarray:
    array = values.detach().double().cpu().numpy()
    if len(array) and not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
        raise UserError(f"difficulty scores of the {name} images must lie in [0, 1] (got "
                        f"{np.nanmin(array):.3g}..{np.nanmax(array):.3g}); use scorer=classifier_difficulty")
    return array


def plot_difficulty(report: dict, bins: int, path: Path, transformed: bool) -> Path:
    """Pool vs real vs chosen difficulty, summed over classes, as fractions of each set.

    Left: raw scores. Right (with the log transform): the space the sampler matched in.
    """
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg

    def total(key):
        counts = [v[key] for v in report.values() if v[key] is not None]
        return np.sum(counts, axis=0) if counts else None

    panels = [("raw: 1 − p(y|x)", {"pool": total("pool_raw"), "real": total("real_raw"), "chosen": total("chosen_raw")})]
    if transformed:
        panels.append(("log-transformed (what the sampler matched)",
                       {"pool": total("pool"), "real": total("real"), "chosen": total("chosen")}))
    figure = Figure(figsize=(5.5 * len(panels), 3.6))
    centres = (np.arange(bins) + 0.5) / bins
    width = 0.8 / bins / 3
    for ax, (title, series) in zip(figure.subplots(1, len(panels), squeeze=False)[0], panels):
        present = [(name, counts) for name, counts in series.items() if counts is not None]
        for i, (name, counts) in enumerate(present):
            ax.bar(centres + (i - (len(present) - 1) / 2) * width, counts / max(counts.sum(), 1), width, label=name)
        ax.set(title=title, xlabel="difficulty", ylabel="fraction of the set", xlim=(0, 1))
        ax.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return path
