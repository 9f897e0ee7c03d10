"""Fair metrics (issue 21): DD-Ranking's HLR / IOR / LRS / ARS in both unit modes against hand-computed values,
the paired interval, and the evaluator's cached paired baselines on tiny digits."""

from __future__ import annotations

import math

import pytest
from support import load_script, tiny_context

from distillkit import baselines, fairness
from distillkit.data.synthetic import SyntheticSet
from distillkit.errors import UserError
from distillkit.results import results
from distillkit.selection import random_per_class, seeded
from distillkit.validation import build

# (e^x − e^−1) / (e − e^−1), worked by hand: e − e^−1 = 2.350402
ROBUST_7 = 466.41599962  # (1096.633158 − 0.367879) / 2.350402
ROBUST_007 = 0.29979068  # (1.072508 − 0.367879) / 2.350402
ROBUST_8 = 1268.11907770  # (2980.957987 − 0.367879) / 2.350402
ROBUST_008 = 0.30437666  # (1.083287 − 0.367879) / 2.350402


def test_the_issues_example_in_both_modes():
    """34 points above random, 20 below full: α = 0.5·34 − 0.5·20 = 7 points, or 0.07 as fractions.
    DD-Ranking 0.2.0 puts 7 into exp() and scores 466 (the issue's "about 700" needs α ≈ 7.4 or a spread over
    seeds, below); fractions give 0.30."""
    full, syn, random = [90.0], [70.0], [36.0]
    assert fairness.hlr(full, syn, "compat") == [20.0]
    assert fairness.ior(syn, random, "compat") == [34.0]
    assert fairness.hlr(full, syn, "fraction") == pytest.approx([0.20])
    assert fairness.ior(syn, random, "fraction") == pytest.approx([0.34])
    assert fairness.lrs(full, syn, syn, random, "compat") == pytest.approx([ROBUST_7])
    assert fairness.lrs(full, syn, syn, random, "fraction") == pytest.approx([ROBUST_007])


def test_scores_are_averaged_per_seed_so_compat_grows_with_the_spread():
    """Seeds 32, 34, 36 points above random (mean 34, as above): compat's mean LRS is (f(6) + f(7) + f(8)) / 3 =
    635, not 466 — exp() of points rewards variance; the fraction mode barely moves (0.2998)."""
    full, syn, random = [90.0] * 3, [70.0] * 3, [38.0, 36.0, 34.0]
    compat = fairness.lrs(full, syn, syn, random, "compat")
    assert sum(compat) / 3 == pytest.approx(635.34033, rel=1e-6)
    assert sum(fairness.lrs(full, syn, syn, random, "fraction")) / 3 == pytest.approx(0.29981, abs=1e-5)


def test_fraction_mode_is_bounded_and_compat_is_not():
    # the extremes of a fraction: a perfect set (IOR = 1, HLR = −1... bounded by 1) and a useless one
    assert fairness.robust_score(1.0) == pytest.approx(1.0)
    assert fairness.robust_score(-1.0) == pytest.approx(0.0)
    assert fairness.lrs([100.0], [100.0], [100.0], [0.0], "fraction")[0] == pytest.approx(
        fairness.robust_score(0.5))
    assert fairness.lrs([100.0], [100.0], [100.0], [0.0], "compat")[0] > 1e20


def test_ars_by_hand_in_both_modes():
    """γ = 0.5: with augmentation 80 vs 76 (+4), without 72 vs 60 (+12): β = 8 points, 0.08 as fractions."""
    args = ([80.0], [76.0], [72.0], [60.0])
    assert fairness.ars(*args, "compat") == pytest.approx([ROBUST_8])
    assert fairness.ars(*args, "fraction") == pytest.approx([ROBUST_008])


def test_paired_interval_by_hand():
    """Differences 1, 2, 3 points: mean 2, sample sd 1, t(0.975, 2) = 4.302653: half-width 4.302653 / √3 = 2.4841."""
    ci = fairness.paired_interval([81.0, 82.0, 83.0], [80.0, 80.0, 80.0], "compat")
    assert (ci.mean, ci.n, ci.paired) == (2.0, 3, True)
    assert (ci.low, ci.high) == pytest.approx((2 - 2.4841377, 2 + 2.4841377))
    assert fairness.paired_interval([81.0, 82.0, 83.0], [80.0, 80.0, 80.0], "fraction").high == pytest.approx(
        0.044841377)
    one = fairness.paired_interval([81.0], [80.0], "fraction")
    assert math.isinf(one.low) and not one.excludes_zero
    assert (one.as_dict()["low"], one.as_dict()["high"]) == (None, None)  # JSON has no infinity
    with pytest.raises(ValueError, match="same, non-zero number of seeds"):
        fairness.paired_interval([81.0, 82.0], [80.0], "compat")


def test_unpaired_interval_is_welch():
    """a = 1, 2, 3 (var 1), b = 0, 0, 0 (var 0): se = √(1/3), df = 2 — the paired case's numbers."""
    ci = fairness.unpaired_interval([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], "compat")
    assert (ci.low, ci.high, ci.paired) == (pytest.approx(2 - 2.4841377), pytest.approx(2 + 2.4841377), False)


def _evaluator(ctx, **settings):
    node = ctx.cfg.evaluator.copy()
    node.update(settings)
    return build(node, "evaluator")


def _count_trainings(monkeypatch) -> list[int]:
    """Trainings of baselines (each cache build evaluates one seed)."""
    calls, real = [], baselines.evaluate

    def counting(evaluator, syn_set, ctx):
        calls.append(len(syn_set))
        return real(evaluator, syn_set, ctx)

    monkeypatch.setattr(baselines, "evaluate", counting)
    return calls


def _seed0_subset(tmp_path, monkeypatch):
    """Tiny digits with 2 evaluation seeds and a fresh cache, the baseline trainings' counter, and the method's set:
    the random subset of seed 0, so that its seed-0 gain over the paired random baseline is 0."""
    cache = f"cache.dir={tmp_path / 'cache'}"
    ctx = tiny_context(None, "ipc=2", "evaluator.num_seeds=2", cache)
    pool = SyntheticSet(ctx.train_images, ctx.train_labels)
    return ctx, cache, _count_trainings(monkeypatch), pool.subset(random_per_class(pool, 2, ctx.data.num_classes,
                                                                                  seeded(0)))


def test_baselines_are_cached_by_protocol_and_paired_by_seed(tmp_path, monkeypatch):
    ctx, cache, calls, chosen = _seed0_subset(tmp_path, monkeypatch)
    evaluator = _evaluator(ctx, baselines=["random", "full"])
    report = evaluator(chosen, ctx)
    assert sorted(calls) == [20, 20, 300, 300]  # random (2 per class × 10) and full (30 × 10), seeds 0 and 1
    gain = report.metrics["gain_over_random"]
    assert gain.runs[0] == 0.0  # seed 0: the same subset, the same network seed → the same accuracy
    assert gain.ci["paired"] and gain.ci["low"] <= gain.mean <= gain.ci["high"]
    random_runs = report.details["fair_metrics"]["baselines"]["random"]["runs"]
    accuracy = report.metrics["accuracy"].runs
    assert gain.runs == pytest.approx([(a - r) / 100 for a, r in zip(accuracy, random_runs)])
    full_runs = report.details["fair_metrics"]["baselines"]["full"]["runs"]
    assert report.metrics["hlr"].runs == pytest.approx([(f - a) / 100 for f, a in zip(full_runs, accuracy)])
    assert report.metrics["lrs"].runs == pytest.approx(
        fairness.lrs(full_runs, accuracy, accuracy, random_runs, "fraction"))
    assert all(0 <= v <= 1 for v in report.metrics["lrs"].runs)

    # a second run, same protocol: every baseline read from the cache
    calls.clear()
    again = _evaluator(tiny_context(None, "ipc=2", "evaluator.num_seeds=2", cache),
                       baselines=["random", "full"], fair_metrics="compat")(chosen, ctx)
    assert calls == []
    assert again.details["fair_metrics"]["baselines"] == report.details["fair_metrics"]["baselines"]
    assert again.metrics["ior"].runs == pytest.approx([100 * v for v in report.metrics["ior"].runs])

    # another protocol: the random baseline trains again; the full baseline's own protocol did not change
    calls.clear()
    _evaluator(ctx, baselines=["random", "full"], epochs=4)(chosen, ctx)
    assert sorted(calls) == [20, 20]
    # a third seed trains only that seed
    calls.clear()
    _evaluator(ctx, baselines=["random"], num_seeds=3)(chosen, ctx)
    assert calls == [20]


def test_baselines_lr_set_trains_the_random_baseline_at_the_sets_learned_lr(tmp_path, monkeypatch):
    import torch

    ctx, _, calls, chosen = _seed0_subset(tmp_path, monkeypatch)
    learned = SyntheticSet(chosen.images, chosen.labels, lr=torch.tensor(0.05))  # trajectory matching's learned lr
    at_evaluator = _evaluator(ctx, baselines=["random"])(learned, ctx)
    assert at_evaluator.details["fair_metrics"]["random_lr"] == 0.01 and len(calls) == 2
    at_set = _evaluator(ctx, baselines=["random"], baselines_lr="set")(learned, ctx)
    assert at_set.details["fair_metrics"]["random_lr"] == pytest.approx(0.05) and len(calls) == 4  # another protocol: trained
    # seed 0: the same images, lr and network seed as the set, so no gain; at the evaluator's lr, the lr differs
    assert at_set.metrics["gain_over_random"].runs[0] == 0.0
    assert at_set.details["fair_metrics"]["baselines"]["random"] != at_evaluator.details["fair_metrics"]["baselines"]["random"]
    # a set without a learned lr trains at the evaluator's lr either way: the same cache entries
    calls.clear()
    _evaluator(ctx, baselines=["random"], baselines_lr="set")(chosen, ctx)
    assert calls == []


def test_results_json_carries_the_fair_metrics(tmp_path):
    ctx = tiny_context(None, "ipc=2", "evaluator.num_seeds=2", f"cache.dir={tmp_path / 'cache'}")
    pool = SyntheticSet(ctx.train_images, ctx.train_labels)
    chosen = pool.subset(random_per_class(pool, 2, ctx.data.num_classes, seeded(5)))
    report = _evaluator(ctx, baselines=["random"], fair_ars=True)(chosen, ctx)
    payload = results(method="random", dataset="digits", ipc=2, status="finished", report=report, roles={},
                      seconds={}, device=ctx.device)
    assert set(payload["metrics"]) == {"accuracy", "gain_over_random", "ior", "ars"}  # no full: no hlr, lrs
    assert set(payload["metrics"]["gain_over_random"]["ci"]) == {"mean", "low", "high", "level", "n", "paired"}
    assert "ci" not in payload["metrics"]["accuracy"]
    fair = payload["fair_metrics"]
    assert fair["mode"] == "fraction" and fair["units"]["ars"] == "score in [0, 1]"
    assert len(fair["ars_runs"]["set_without_augmentation"]) == 2
    assert payload["primary_metric"]["name"] == "accuracy"


def test_soft_label_sets_are_compared_on_their_hard_labels(tmp_path):
    import torch

    ctx = tiny_context(None, "ipc=2", f"cache.dir={tmp_path / 'cache'}")
    pool = SyntheticSet(ctx.train_images, ctx.train_labels)
    chosen = pool.subset(random_per_class(pool, 2, ctx.data.num_classes, seeded(0)))
    soft = SyntheticSet(chosen.images, chosen.labels, soft_labels=torch.nn.functional.one_hot(chosen.labels, 10) * 5.0)
    report = _evaluator(ctx, baselines=["random"])(soft, ctx)
    assert report.details["labels"] == "soft"
    assert report.metrics["gain_over_random"].runs == [0.0]  # hard labels of the seed-0 random subset
    assert report.details["fair_metrics"]["ior_labels"] == "hard"
    assert "accuracy_hard_labels" in report.metrics


@pytest.mark.parametrize("settings, message", [
    ({"baselines": ["random", "random"]}, "lists a baseline twice"),
    ({"baselines": ["teacher"]}, "evaluator.baselines"),
    ({"fair_ars": True}, "needs dsa: true and the random baseline"),
    ({"fair_metrics": "percent"}, "evaluator.fair_metrics"),
    ({"baselines_lr": "teacher"}, "evaluator.baselines_lr"),
])
def test_bad_fair_settings_are_one_line_errors(settings, message):
    ctx = tiny_context(None)
    with pytest.raises(UserError, match=message):
        _evaluator(ctx, **settings)


def _record(folder, method, runs, labels="hard", seed=0, host="AMD EPYC (1 threads)"):
    import json

    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({
        "method": method, "accuracy": {"runs": runs}, "labels": labels, "device_name": host,
        "config": {"evaluator": {"seed": seed}}}))
    return str(folder)


def test_fair_metrics_script_pairs_records_by_seed(tmp_path, capsys, monkeypatch):
    script = load_script("fair_metrics", monkeypatch)
    random = _record(tmp_path / "random", "random", [80.0, 80.0, 80.0])
    full = _record(tmp_path / "full", "full", [90.0, 90.0, 90.0])
    method = _record(tmp_path / "m", "m", [81.0, 82.0, 83.0])
    soft = _record(tmp_path / "s", "s", [85.0, 85.0, 85.0], labels="soft")
    merged = ",".join(_record(tmp_path / f"d{i}", "d", [v]) for i, v in enumerate([70.0, 70.5, 71.0]))
    script.main(["--random", random, "--full", full, method, soft, f"dgs={merged}"])
    out = capsys.readouterr().out
    # m: differences 1, 2, 3 points → 2 ± 2.4841 (paired); HLR 9, 8, 7 points; LRS the mean of f(−3.5), f(−3), f(−2.5)
    assert "| m | hard | 3 | 82.00 | 80.00 (AMD EPYC) | 2.00 [-0.48, 4.48] paired | no (interval spans 0) | 8.00 |" in out
    lrs = sum(fairness.robust_score(a) for a in (-3.5, -3.0, -2.5)) / 3
    assert f"| 2.00 | {lrs:.2f} | — |" in out and f"{lrs:.2f}" == "-0.13"
    assert "| 0.0200 [-0.0048, 0.0448] paired |" in out
    assert "5.00 [5.00, 5.00] paired † | yes | — |" in out  # soft labels without their hard-label evaluation
    assert "s: HLR and LRS need its evaluation with hard labels" in out
    assert "| -9.50 [-10.74, -8.26] unpaired | no (below random) |" in out  # merged: 70.5 vs 80 by Welch
