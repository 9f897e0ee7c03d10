"""SSD-KD's table and its "as accurate, sooner" check, from runs already measured (scripts/bench_ssdkd_fmnist.sh).

    python scripts/ssdkd_speedup.py outputs/bench/ssdkd_fmnist [--reference fast_dfkd]

Runs are the folders ``<row>_s<seed>`` (a ``rounds`` method with ``schedule.curve_every``) and ``kd_random`` (KD
on a real subset, one run with several students). For each row: the student's test accuracy (mean ± population std over
seeds), the teacher's, the seconds of synthesis and of learning (``rounds_seconds``), the evaluator's, the
buffer's peak in images and as stored (the saved set is the whole buffer or bank at the end, its peak) and the
process's peak RSS. Then, on the learning curves (held-out accuracy against the seconds
in rounds): the reference row's final held-out accuracy (mean over its seeds) is the target; each row's time
to it is, per seed, the first curve point at or above it (a point every ``curve_every`` rounds: an upper
bound), and its speed-up is the reference's mean rounds time over that. "At equal time" compares each row's
final held-out accuracy with the reference's curve at the row's own rounds time (linear between points). Last,
each row's mean held-out accuracy at every curve round.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from distillkit.stages import Metric


def mean_std(values: list[float], digits: int = 2) -> str:
    """Mean ± population std, the convention of every results.json (:class:`distillkit.stages.Metric`)."""
    if not values:
        return "—"
    metric = Metric.of(values)
    return f"{metric.mean:.{digits}f} ± {metric.std:.{digits}f}"


def load_rows(folder: Path) -> dict[str, list[dict]]:
    rows: dict[str, list[dict]] = {}
    for path in sorted(folder.glob("*/results.json")):
        match = re.fullmatch(r"(.+)_s(\d+)", path.parent.name)
        rows.setdefault(match.group(1) if match else path.parent.name, []).append(json.loads(path.read_text()))
    return rows


def accuracy_at(curve: list[dict], seconds: float) -> float:
    """The curve's held-out accuracy at ``seconds`` (linear between points; its ends outside them)."""
    if seconds <= curve[0]["seconds"]:
        return curve[0]["held_out_accuracy"]
    for before, after in zip(curve, curve[1:]):
        if seconds <= after["seconds"]:
            share = (seconds - before["seconds"]) / (after["seconds"] - before["seconds"])
            return before["held_out_accuracy"] + share * (after["held_out_accuracy"] - before["held_out_accuracy"])
    return curve[-1]["held_out_accuracy"]


def time_to(curve: list[dict], target: float) -> float | None:
    return next((p["seconds"] for p in curve if p["held_out_accuracy"] >= target), None)


def table(rows: dict[str, list[dict]]) -> list[str]:
    lines = ["| row | seeds | student accuracy % (test) | teacher % | synthesis s | learning s | evaluator s | "
             "buffer peak (stored MiB) | peak RSS MiB |", "|---|---|---|---|---|---|---|---|---|"]
    for name, runs in rows.items():
        student = [r for run in runs for r in run["metrics"]["student_accuracy"]["runs"]]
        teacher = [run["metrics"]["teacher_accuracy"]["mean"] for run in runs]
        halves = [run.get("rounds_seconds", {}) for run in runs]
        synthesis = [h["synthesis"] for h in halves if h]
        learning = [h["learning"] for h in halves if h]
        evaluator = [run["seconds"].get("evaluator", 0.0) for run in runs]
        peak = {run["buffer"]["peak"] for run in runs if run.get("buffer")}
        stored = max((run["cost"]["distilled_set_bytes"] or 0) / 2 ** 20 for run in runs)
        rss = [run["cost"]["peak_rss_mib"] for run in runs]
        lines.append(f"| `{name}` | {len(student)} | {mean_std(student)} | {statistics.mean(teacher):.2f} | "
                     f"{mean_std(synthesis, 0)} | {mean_std(learning, 0)} | {mean_std(evaluator, 0)} | "
                     f"{', '.join(map(str, sorted(peak))) or '—'} ({stored:.1f}) | {max(rss):.0f} |")
    return lines


def speedups(rows: dict[str, list[dict]], reference: str) -> list[str]:
    curved = {name: [run["curve"] for run in runs if run.get("curve")] for name, runs in rows.items()}
    curved = {name: curves for name, curves in curved.items() if curves}
    if reference not in curved:
        return [f"(no `{reference}` curve: no speed-up)"]
    target = statistics.mean(c[-1]["held_out_accuracy"] for c in curved[reference])
    reference_seconds = statistics.mean(c[-1]["seconds"] for c in curved[reference])
    lines = [f"Target: `{reference}`'s final held-out accuracy, {target:.2f} % (mean of {len(curved[reference])} "
             f"seeds), reached in {reference_seconds:.0f} s of rounds.", "",
             "| row | final held-out % | rounds s | reference at that time % | time to the target s (seeds reaching it) "
             "| speed-up |", "|---|---|---|---|---|---|"]
    for name, curves in curved.items():
        final = [c[-1]["held_out_accuracy"] for c in curves]
        seconds = [c[-1]["seconds"] for c in curves]
        at_equal = [accuracy_at(ref, s) for ref in curved[reference] for s in seconds]
        reached = [t for t in (time_to(c, target) for c in curves) if t is not None]
        speed = f"{reference_seconds / statistics.mean(reached):.2f}×" if len(reached) == len(curves) else "not reached"
        lines.append(f"| `{name}` | {mean_std(final)} | {mean_std(seconds, 0)} | {statistics.mean(at_equal):.2f} | "
                     f"{mean_std(reached, 0)} ({len(reached)}/{len(curves)}) | {speed} |")
    return lines


def curves(rows: dict[str, list[dict]]) -> list[str]:
    """Held-out accuracy at each curve round, mean over a row's seeds (rounds every row measured)."""
    curved = {name: [run["curve"] for run in runs if run.get("curve")] for name, runs in rows.items()}
    curved = {name: c for name, c in curved.items() if c}
    if not curved:
        return []
    common = sorted(set.intersection(*({p["round"] for p in c} for cs in curved.values() for c in cs)))
    lines = ["| row | " + " | ".join(f"r{r}" for r in common) + " |", "|---|" + "---|" * len(common)]
    for name, cs in curved.items():
        at = [statistics.mean(p["held_out_accuracy"] for c in cs for p in c if p["round"] == r) for r in common]
        lines.append(f"| `{name}` | " + " | ".join(f"{a:.1f}" for a in at) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the benchmark's output folder")
    parser.add_argument("--reference", default="fast_dfkd", help="the row whose final accuracy is the target")
    args = parser.parse_args()
    rows = load_rows(args.folder)
    print("\n".join(table(rows) + [""] + speedups(rows, args.reference) + [""] + curves(rows)))


if __name__ == "__main__":
    main()
