"""SSD-KD and its baselines (docs/methods/ssdkd.md): the modulating function φ, the balanced partial buffer,
prioritized replay and its importance weights, the inversion loss's terms, the BatchNorm-teacher check, and
the methods end to end on tiny digits (named metrics, exact resume, a bounded buffer against a growing bank)."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn as nn

from distillkit.data.synthetic import SyntheticSet
from distillkit.generators.teacher_inversion import BNStatistics, TeacherInversion, adversarial, bn_statistics
from distillkit.run import execute
from distillkit.samplers.prioritized import PrioritizedReplay
from distillkit.schedules.buffer import ReplayBuffer
from distillkit.schedules.rounds import CHECKPOINT_NAME
from distillkit.scorers.modulating import modulating
from distillkit.stages import Scores
from distillkit.training import kd_per_sample
from support import TINY, StubContext, compose, distillkit, interrupted_after_round, load_script

SSDKD = (*TINY, "ipc=2")


def logits_for(probabilities) -> torch.Tensor:
    return torch.tensor(probabilities, dtype=torch.float).log()


# ---- φ ------------------------------------------------------------------------------------------------

def test_phi_diversity_and_difficulty_terms_on_constructed_predictions():
    # four samples: three the teacher puts in class 0 (two sure, one unsure), one in class 1
    logits = logits_for([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    diversity = modulating(logits, diversity=True, difficulty=False)
    assert torch.allclose(diversity, torch.tensor([1 - 3 / 4, 1 - 3 / 4, 1 - 3 / 4, 1 - 1 / 4]))
    difficulty = modulating(logits, gamma=2.0, diversity=False, difficulty=True)
    assert torch.allclose(difficulty, torch.tensor([0.1 ** 2, 0.1 ** 2, 0.4 ** 2, 0.2 ** 2]), atol=1e-6)
    both = modulating(logits, gamma=2.0)
    assert torch.allclose(both, diversity * difficulty)
    assert torch.equal(modulating(logits, diversity=False, difficulty=False), torch.ones(4))
    assert torch.allclose(modulating(logits, gamma=0.0, diversity=False), torch.ones(4))  # γ = 0: no focus


# ---- the buffer ----------------------------------------------------------------------------------------

def labelled(labels, offset: float = 0.0) -> SyntheticSet:
    labels = torch.tensor(labels)
    return SyntheticSet(torch.arange(len(labels), dtype=torch.float).view(-1, 1, 1, 1) + offset, labels)


def test_balanced_buffer_keeps_its_size_and_class_balance_and_replaces_the_lowest_priority():
    buffer = ReplayBuffer(6, "balanced", num_classes=3, admit=1.0, new_score="max")
    # a batch of 12 skewed to class 0: at most two of a class enter, in the order of the entry scores
    buffer.add(labelled([0] * 8 + [1, 1, 2, 2]), torch.tensor([0.1, 0.9, 0.5, 0.2, 0.3, 0.4, 0.6, 0.7, 1, 1, 1, 1]))
    assert len(buffer) == 6 and buffer.set.per_class_counts(3) == [2, 2, 2]
    assert sorted(buffer.set.images[buffer.set.labels == 0].flatten().tolist()) == [1.0, 7.0]  # φ 0.9 and 0.7
    assert torch.equal(buffer.scores, torch.ones(6))  # an empty buffer's new entries start at 1
    buffer.update(torch.arange(6), torch.tensor([5.0, 1.0, 2.0, 3.0, 4.0, 6.0]))
    old = buffer.set.images.flatten().tolist()
    # one new sample per class: each replaces its class's lowest-priority entry, and starts at the top priority
    buffer.add(labelled([0, 1, 2], offset=100), None)
    assert len(buffer) == 6 and buffer.set.per_class_counts(3) == [2, 2, 2] and buffer.peak == 6
    kept = buffer.set.images.flatten().tolist()
    lowest = {c: min((s, x) for s, x, lab in zip([5.0, 1.0, 2.0, 3.0, 4.0, 6.0], old, [0, 0, 1, 1, 2, 2])
                     if lab == c)[1] for c in range(3)}
    assert not set(lowest.values()) & set(kept) and {100.0, 101.0, 102.0} <= set(kept)
    assert buffer.scores.tolist()[-3:] == [6.0, 6.0, 6.0]
    # admit: only the highest-scored half of a batch may enter
    half = ReplayBuffer(6, "balanced", num_classes=3, admit=0.5)
    half.add(labelled([0, 1, 2, 0, 1, 2]), torch.tensor([0.1, 0.2, 0.3, 0.6, 0.5, 0.4]))
    assert sorted(half.set.images.flatten().tolist()) == [3.0, 4.0, 5.0]


def test_an_unbounded_buffer_never_evicts_and_a_fixed_one_stays_fixed():
    bank, fifo = ReplayBuffer(None), ReplayBuffer(5, "oldest")
    for r in range(4):
        bank.add(labelled([0, 1, 0]), None)
        fifo.add(labelled([0, 1, 0]), None)
    assert len(bank) == bank.peak == bank.added == 12
    assert len(fifo) == fifo.peak == 5 and fifo.added == 12


# ---- prioritized replay ----------------------------------------------------------------------------------

def test_prioritized_sampling_frequencies_follow_priority_to_the_alpha():
    ctx = StubContext(ipc=1, num_classes=2)
    pool = labelled([0, 0, 0, 0])
    scores = Scores(torch.tensor([1.0, 2.0, 4.0, 8.0]))
    sampler = PrioritizedReplay(alpha=0.5, epsilon=1e-9, batch_size=1, beta_steps=10)
    draws = 20000
    counts = torch.bincount(torch.cat([sampler(pool, scores, ctx) for _ in range(draws)]), minlength=4).float()
    expected = scores.pool.pow(0.5) / scores.pool.pow(0.5).sum()
    # within 4 standard errors of the binomial frequency of each sample
    assert torch.all((counts / draws - expected).abs() < 4 * (expected * (1 - expected) / draws).sqrt())
    uniform = PrioritizedReplay(alpha=0.0, batch_size=1)
    assert torch.allclose(uniform.probabilities(pool, scores, ctx), torch.full((4,), 0.25))


def test_importance_weights_and_the_beta_anneal():
    ctx = StubContext(ipc=1, num_classes=2)
    pool = labelled([0, 1, 0, 1])
    scores = Scores(torch.tensor([1.0, 3.0, 0.0, 4.0]))
    sampler = PrioritizedReplay(alpha=1.0, epsilon=1.0, beta_start=0.4, beta_end=1.0, beta_steps=4, batch_size=2)
    p = torch.tensor([2.0, 4.0, 1.0, 5.0]) / 12  # (score + ε)^α, normalised
    assert torch.allclose(sampler.probabilities(pool, scores, ctx), p)
    assert [sampler.beta(t) for t in (0, 2, 4, 40)] == pytest.approx([0.4, 0.7, 1.0, 1.0])
    for draw in range(6):
        chosen = sampler(pool, scores, ctx)
        beta = sampler.beta(draw)
        w = (4 * p[chosen]).pow(-beta)
        assert torch.allclose(sampler.weights(pool, scores, chosen, ctx), w / w.max())
    assert sampler.weights(pool, scores, torch.tensor([0, 3]), ctx).max() == 1.0
    # class-balanced draws (batch_size null): P(i) is the chance in one per-class draw
    balanced = PrioritizedReplay(alpha=1.0, epsilon=1.0)
    assert torch.allclose(balanced.probabilities(pool, scores, ctx), torch.tensor([2 / 3, 4 / 9, 1 / 3, 5 / 9]) / 2)


def test_importance_weights_weigh_the_learner_step():
    import copy

    from distillkit.learners.classifier import ClassifierLearner

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2))
    ctx = StubContext(ipc=1)
    batch = SyntheticSet(torch.randn(4, 1, 1, 1), torch.tensor([0, 1, 0, 1]))
    weighted = dataclasses.replace(batch, weights=torch.tensor([1.0, 0.0, 0.0, 0.0]))
    # weights (1, 0, 0, 0) at lr 0.4 over a batch of 4 = the first sample alone at lr 0.1 (mean over the batch)
    a, b = ClassifierLearner(lr=0.4, momentum=0.0, weight_decay=0.0), ClassifierLearner(lr=0.1, momentum=0.0, weight_decay=0.0)
    a.begin(copy.deepcopy(model), ctx)
    b.begin(copy.deepcopy(model), ctx)
    feedback = a.step(weighted, ctx)
    b.step(batch.subset(torch.tensor([0])), ctx)
    assert all(torch.allclose(p, q) for p, q in zip(a.model.parameters(), b.model.parameters()))
    assert feedback.shape == (4,) and (feedback > 0).all()  # the feedback is the unweighted per-sample loss


# ---- the inversion loss ----------------------------------------------------------------------------------

def test_bn_statistics_loss_is_zero_when_the_batch_matches_the_running_statistics():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 4, 4) * 2 + 1
    norm = nn.BatchNorm2d(3).eval()
    norm.running_mean.copy_(x.mean((0, 2, 3)))
    norm.running_var.copy_(x.var((0, 2, 3), unbiased=False))
    teacher = nn.Sequential(norm, nn.Flatten(), nn.Linear(48, 2))
    with bn_statistics(teacher) as stats:
        teacher(x)
    assert stats.loss.item() == pytest.approx(0.0, abs=1e-5)
    with bn_statistics(teacher) as stats:
        teacher(x + 1)  # the mean moved by 1 in each of 3 channels: ‖Δμ‖₂ = √3
    assert stats.loss.item() == pytest.approx(math.sqrt(3), abs=1e-4)
    assert not norm._forward_hooks  # the hooks leave with the block (the teacher is shared)
    assert isinstance(BNStatistics(teacher).loss, torch.Tensor)


def test_the_adversarial_term_is_minus_the_kl_where_student_and_teacher_agree():
    teacher = logits_for([[0.7, 0.3], [0.7, 0.3], [0.6, 0.4]])
    student = logits_for([[0.9, 0.1], [0.7, 0.3], [0.3, 0.7]])
    term = adversarial(student, teacher)
    kl = kd_per_sample(student, teacher, 1.0)
    assert term[0] < 0 and term[0] == pytest.approx(-kl[0].item())  # agreeing, different: negative
    assert term[1].item() == pytest.approx(0.0, abs=1e-7)  # the same distribution
    assert term[2].item() == 0.0  # disagreeing: masked out
    # minimising the term pushes the student's distribution away from the teacher's
    s = student[:1].clone().requires_grad_()
    adversarial(s, teacher[:1]).sum().backward()
    assert s.grad[0, 0] < 0  # descending it raises the student's (already too confident) class-0 logit further


# ---- the BatchNorm teacher ----------------------------------------------------------------------------------

def test_a_teacher_without_batchnorm_is_refused_with_one_line_before_anything_trains(tmp_path):
    out = distillkit("run", *SSDKD, "method=ssdkd", "model@roles.teacher.model=convnet", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("distillkit: error: roles.teacher.model: generator: teacher inversion matches the "
                           "teacher's BatchNorm running statistics")
    assert "model@roles.teacher.model=convnet_bn" in line
    assert "role teacher" not in out.stdout and not (tmp_path / "results.json").exists()


# ---- end to end ---------------------------------------------------------------------------------------------

def test_ssdkd_end_to_end_reports_named_metrics_and_a_fixed_buffer_while_fast_dfkd_grows(tmp_path):
    ssdkd = execute(compose(*SSDKD, "method=ssdkd", "budget.ssdkd_rounds=3"), tmp_path / "ssdkd")
    assert ssdkd["status"] == "evaluated" and ssdkd["primary_metric"]["name"] == "student_accuracy"
    assert set(ssdkd["metrics"]) == {"student_accuracy", "teacher_accuracy"} and "accuracy" not in ssdkd
    assert all(0 <= m["mean"] <= 100 for m in ssdkd["metrics"].values())
    assert ssdkd["buffer"]["capacity"] == ssdkd["buffer"]["peak"] == 20  # ipc 2 × 10 classes, full from round 2
    assert ssdkd["images_per_class"] == [2] * 10
    assert ssdkd["buffer"]["samples_generated"] == 3 * 30 and ssdkd["buffer"]["samples_admitted"] == 3 * 15  # admit 0.5
    assert set(ssdkd["roles"]) >= {"teacher", "student"}
    distilled = SyntheticSet.load(tmp_path / "ssdkd" / "distilled.safetensors")
    assert len(distilled) == 20 and distilled.soft_labels.shape == (20, 10)

    bank = execute(compose(*SSDKD, "method=fast_dfkd", "budget.ssdkd_rounds=3"), tmp_path / "fast")
    assert bank["buffer"]["capacity"] is None
    assert bank["buffer"]["peak"] == bank["buffer"]["size"] == bank["buffer"]["samples_admitted"] == 3 * 30
    saved = json.loads((tmp_path / "fast" / "results.json").read_text())
    assert saved["buffer"]["peak"] == 90 > ssdkd["buffer"]["peak"]


def test_an_interrupted_ssdkd_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    """Interrupted after round 2 of 4, the same folder continues at round 3 and ends exactly where an
    uninterrupted run ends: the generator network, its meta-optimiser and latent draws, the buffer and its
    priorities, the sampler's draws and β clock, the student and its optimiser."""
    args = (*SSDKD, "method=ssdkd", "budget.ssdkd_rounds=4")
    whole = execute(compose(*args), tmp_path / "a")
    interrupted_after_round(monkeypatch, 2, lambda: execute(compose(*args), tmp_path / "b"))
    calls = []
    generate = TeacherInversion.__call__
    monkeypatch.setattr(TeacherInversion, "__call__", lambda self, ctx: calls.append(1) or generate(self, ctx))
    torch.manual_seed(123)
    resumed = execute(compose(*args), tmp_path / "b")
    assert len(calls) == 2
    assert resumed["metrics"] == whole["metrics"] and resumed["buffer"] == whole["buffer"]
    a, b = (torch.load(tmp_path / d / CHECKPOINT_NAME, weights_only=True)["state"] for d in ("a", "b"))
    assert torch.equal(a["buffer"]["images"], b["buffer"]["images"])
    assert torch.equal(a["buffer"]["scores"], b["buffer"]["scores"])
    for stage in ("learner", "generator"):
        for key, value in a["stages"][stage].get("model" if stage == "learner" else "net").items():
            assert torch.equal(value, b["stages"][stage]["model" if stage == "learner" else "net"][key])


def test_kd_student_evaluates_any_distilled_set_as_a_transfer_set(tmp_path):
    results = execute(compose(*TINY, "method=dm", "ipc=2", "evaluator=kd_student"), tmp_path)
    assert results["primary_metric"] == {"name": "student_accuracy", "higher_is_better": True, "unit": "%"}
    assert len(results["metrics"]["student_accuracy"]["runs"]) == 1 and "teacher_accuracy" in results["metrics"]


@pytest.mark.parametrize("min_steps,steps", [(0, 3), (7, 7)])
def test_kd_student_min_steps_gives_a_small_set_more_steps_ending_the_last_pass_part_way(tmp_path, monkeypatch,
                                                                                          min_steps, steps):
    # 20 images at batch 8: 3 steps a pass; a floor of 7 is two passes and one step of a third
    from distillkit.evaluators import kd_student
    taken = []
    step = kd_student.KDStudent.step
    monkeypatch.setattr(kd_student.KDStudent, "step",
                        lambda self, batch, ctx: taken.append(len(batch)) or step(self, batch, ctx))
    results = execute(compose(*TINY, "method=random", "ipc=2", "evaluator=kd_student", "evaluator.epochs=1",
                              "evaluator.batch_size=8", "evaluator.num_seeds=1", f"evaluator.min_steps={min_steps}"),
                      tmp_path)
    assert results["train_steps"] == len(taken) == steps and taken[:3] == [8, 8, 4]


def test_the_speedup_script_reads_time_to_the_reference_accuracy_from_the_curves(tmp_path, monkeypatch):
    script = load_script("ssdkd_speedup", monkeypatch)

    def record(name: str, seed: int, points: list[tuple[float, float]], accuracy: float) -> None:
        folder = tmp_path / f"{name}_s{seed}"
        folder.mkdir()
        curve = [{"round": 4 * (i + 1), "seconds": s, "images_generated": 0, "held_out_accuracy": a}
                 for i, (s, a) in enumerate(points)]
        (folder / "results.json").write_text(json.dumps({
            "metrics": {"student_accuracy": {"runs": [accuracy]}, "teacher_accuracy": {"mean": 90.0}},
            "rounds_seconds": {"synthesis": 1.0, "learning": 2.0}, "seconds": {"evaluator": 1.0},
            "buffer": {"peak": 10}, "cost": {"peak_rss_mib": 100.0, "distilled_set_bytes": 2 ** 20}, "curve": curve}))

    record("fast_dfkd", 0, [(100, 50.0), (200, 70.0), (300, 80.0)], 79.0)
    record("fast_dfkd", 1, [(100, 50.0), (200, 70.0), (300, 80.0)], 81.0)
    record("ssdkd", 0, [(100, 60.0), (200, 80.0), (300, 85.0)], 84.0)
    rows = script.load_rows(tmp_path)
    assert sorted(rows) == ["fast_dfkd", "ssdkd"] and len(rows["fast_dfkd"]) == 2
    assert script.accuracy_at(rows["fast_dfkd"][0]["curve"], 150) == pytest.approx(60.0)
    lines = "\n".join(script.speedups(rows, "fast_dfkd"))
    # target 80 % reached by fast_dfkd at 300 s (its mean rounds time) and by ssdkd at 200 s: 1.5×
    assert "80.00 %" in lines and "| `ssdkd` | 85.00 ± 0.00 | 300 ± 0 | 80.00 | 200 ± 0 (1/1) | 1.50× |" in lines
    assert "| `fast_dfkd` | 2 | 80.00 ± 1.00 |" in "\n".join(script.table(rows))  # population std of 79 and 81
