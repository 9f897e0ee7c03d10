"""Fair metrics over per-seed accuracies: the gain over a paired random baseline with its confidence interval,
and DD-Ranking's hard-label recovery (HLR), improvement over random (IOR), label-robust score (LRS) and
augmentation-robust score (ARS).

Every function takes per-seed accuracies **in percent** (what the evaluators report), index ``i`` of every
argument being seed ``seed + i`` (paired: the same network initialisation, the same augmentation draws).

Two unit modes (``evaluator.fair_metrics``):

* ``fraction`` (default): accuracies as fractions of 1, so HLR and IOR lie in [−1, 1], the exponent
  α = w·IOR − (1−w)·HLR in [−1, 1] and LRS = (e^α − e^−1) / (e − e^−1) in [0, 1] — the bounded score
  DD-Ranking's paper describes.
* ``compat``: DD-Ranking 0.2.0's code as released, which feeds differences in percentage points to ``exp``:
  HLR and IOR in points, LRS and ARS unbounded above and below zero (a set 34 points above random and 20
  below full scores 466 where the fraction mode gives 0.30; one level with random and 13 below full, −0.16).
  Only for comparison with its leaderboard.

Both modes average the per-seed scores (as DD-Ranking does), so with the exponential the mean depends on the
spread over seeds, not only on the mean accuracies.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from scipy import stats

MODES = ("fraction", "compat")
Mode = Literal[MODES]
# the unit of each metric, per mode (results.json carries it beside the numbers)
UNITS = {
    "fraction": {"gain_over_random": "fraction", "hlr": "fraction", "ior": "fraction",
                 "lrs": "score in [0, 1]", "ars": "score in [0, 1]"},
    "compat": {"gain_over_random": "percentage points", "hlr": "percentage points", "ior": "percentage points",
               "lrs": "DD-Ranking 0.2.0 units (exp of points, unbounded)",
               "ars": "DD-Ranking 0.2.0 units (exp of points, unbounded)"},
}
DEFAULT_WEIGHT = 0.5  # DD-Ranking's leaderboard weight for both LRS (lrs_lambda) and ARS (ars_lambda)


def _scale(mode: str) -> float:
    if mode not in MODES:
        raise ValueError(f"fair_metrics mode must be one of {MODES}, not {mode!r}")
    return 0.01 if mode == "fraction" else 1.0


def _paired(*columns: Sequence[float]) -> list[tuple[float, ...]]:
    lengths = {len(c) for c in columns}
    if len(lengths) != 1 or not lengths.pop():
        raise ValueError(f"paired metrics need the same, non-zero number of seeds in every column "
                         f"(got {[len(c) for c in columns]})")
    return list(zip(*columns))


def differences(a: Sequence[float], b: Sequence[float], mode: str) -> list[float]:
    """Per-seed ``a − b`` in the mode's unit."""
    k = _scale(mode)
    return [k * (x - y) for x, y in _paired(a, b)]


def hlr(full: Sequence[float], syn_hard: Sequence[float], mode: str) -> list[float]:
    """Hard-label recovery per seed: full-data accuracy − the set's accuracy with hard labels (lower is better)."""
    return differences(full, syn_hard, mode)


def ior(syn: Sequence[float], random: Sequence[float], mode: str) -> list[float]:
    """Improvement over random per seed: the set's accuracy − the random subset's, same protocol."""
    return differences(syn, random, mode)


def robust_score(exponent: float) -> float:
    """DD-Ranking's normalisation (e^x − e^−1) / (e − e^−1): 0 at x = −1, 1 at x = 1."""
    return (math.exp(exponent) - math.exp(-1)) / (math.e - math.exp(-1))


def lrs(full: Sequence[float], syn_hard: Sequence[float], syn: Sequence[float], random: Sequence[float],
        mode: str, weight: float = DEFAULT_WEIGHT) -> list[float]:
    """Label-robust score per seed: robust_score(w·IOR − (1−w)·HLR); IOR on the set's own protocol."""
    return [robust_score(weight * i - (1 - weight) * h)
            for h, i in zip(hlr(full, syn_hard, mode), ior(syn, random, mode))]


def ars(syn_aug: Sequence[float], random_aug: Sequence[float], syn_plain: Sequence[float],
        random_plain: Sequence[float], mode: str, weight: float = DEFAULT_WEIGHT) -> list[float]:
    """Augmentation-robust score per seed: robust_score(γ·(gain with augmentation) + (1−γ)·(gain without))."""
    return [robust_score(weight * a + (1 - weight) * p)
            for a, p in zip(ior(syn_aug, random_aug, mode), ior(syn_plain, random_plain, mode))]


@dataclass
class Interval:
    """A mean difference and its two-sided confidence interval; ``paired``: over per-seed differences
    (Student t, n − 1 degrees of freedom), else Welch's unpaired interval."""

    mean: float
    low: float
    high: float
    level: float
    n: int
    paired: bool

    def as_dict(self) -> dict:
        """For results.json: an unbounded end (one seed) is null, since JSON has no infinity."""
        ends = [v if math.isfinite(v) else None for v in (self.low, self.high)]
        return {"mean": self.mean, "low": ends[0], "high": ends[1], "level": self.level, "n": self.n,
                "paired": self.paired}

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_interval(a: Sequence[float], b: Sequence[float], mode: str, level: float = 0.95) -> Interval:
    """The mean of per-seed ``a − b`` with its t interval; one seed gives an unbounded interval (no spread
    to estimate). With three seeds t(0.975, 2) = 4.30: the interval is ±4.3 standard errors wide."""
    return t_interval(differences(a, b, mode), level)


def t_interval(d: Sequence[float], level: float = 0.95) -> Interval:
    """The Student-t interval of the mean of paired differences ``d``, in their own unit (any metric: the
    report's gain of an FID row uses it too)."""
    mean, n = statistics.fmean(d), len(d)
    if n < 2:
        return Interval(mean, -math.inf, math.inf, level, n, True)
    half = float(stats.t.ppf((1 + level) / 2, n - 1)) * statistics.stdev(d) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, level, n, True)


def unpaired_interval(a: Sequence[float], b: Sequence[float], mode: str, level: float = 0.95) -> Interval:
    """Welch's interval for mean(a) − mean(b), for runs that share no seeds (e.g. one evaluation seed per
    distillation seed against a random row's evaluation seeds)."""
    k = _scale(mode)
    a, b = [k * x for x in a], [k * x for x in b]
    mean = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return Interval(mean, -math.inf, math.inf, level, min(len(a), len(b)), False)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return Interval(mean, mean, mean, level, min(len(a), len(b)), False)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf((1 + level) / 2, df)) * se
    return Interval(mean, mean - half, mean + half, level, min(len(a), len(b)), False)
