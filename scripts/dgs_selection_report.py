"""What each DGS row kept, seen by the teacher: mean difficulty and the share of images the teacher
misclassifies, per run directory, beside the run's accuracy, and how the two correlate.

    python scripts/dgs_selection_report.py outputs/bench/dgs_fmnist/*_seed*

Every run directory must hold distilled.safetensors and results.json from one dataset; the teacher
is the first run's ``teacher`` role (read from the cache, trained if missing); difficulty is
``1 − p(y|x)`` as DGS scores it. Runs group into rows by their name before ``_seed``. Accuracy counts
every evaluation seed of a run: those of its results.json and of any ``distillkit eval`` of the same
set written below the run directory (``*/eval_results.json``, e.g. more seeds with
``evaluator.seed=1 evaluator.num_seeds=2 --out RUN/eval_seeds12``). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path

from omegaconf import OmegaConf

from distillkit.data.synthetic import SyntheticSet
from distillkit.run import make_context
from distillkit.scorers.difficulty import difficulty_from_logits
from distillkit.tracking import NoTracker
from distillkit.training import predict


def seeds_of(results: dict) -> dict[int, float]:
    """Evaluation seed → accuracy of one results.json / eval_results.json (seeds seed, seed + 1, …)."""
    evaluator = results.get("evaluator") or results["config"]["evaluator"]
    return {int(evaluator["seed"]) + i: run for i, run in enumerate(results["accuracy"]["runs"])}


def protocol(evaluator: dict) -> dict:
    return {k: v for k, v in evaluator.items() if k not in ("seed", "num_seeds")}


def evaluation_runs(run_dir: Path, results: dict) -> dict[int, float]:
    """Every evaluation seed of the run's set under the run's own protocol."""
    runs = seeds_of(results)
    for extra in sorted(run_dir.glob("*/eval_results.json")):
        more = json.loads(extra.read_text())
        if protocol(more["evaluator"]) == protocol(results["config"]["evaluator"]):
            runs.update(seeds_of(more))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    args = parser.parse_args()

    rows = defaultdict(list)
    ctx = None
    for run_dir in args.run_dirs:
        results = json.loads((run_dir / "results.json").read_text())
        if ctx is None:  # one teacher for every run: the first run's config names it
            ctx = make_context(OmegaConf.create(results["config"]), run_dir=None, tracker=NoTracker())
        kept = SyntheticSet.load(run_dir / "distilled.safetensors").to(ctx.device)
        logits = predict(ctx.role("teacher"), kept.images)
        difficulty = difficulty_from_logits(logits, kept.labels)
        row = run_dir.name.rsplit("_seed", 1)[0]
        rows[row].append({"accuracies": list(evaluation_runs(run_dir, results).values()),
                          "difficulty": difficulty.mean().item(),
                          "misclassified": 100 * (logits.argmax(1) != kept.labels).float().mean().item()})

    def mean_std(values):
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"

    def correlation(runs):
        """Pearson r of a set's accuracy with its misclassified share: does drawing failures explain the spread?"""
        accuracy, misclassified = [statistics.mean(r["accuracies"]) for r in runs], [r["misclassified"] for r in runs]
        if len(runs) < 3 or len(set(misclassified)) < 2 or len(set(accuracy)) < 2:
            return "—"
        return f"{statistics.correlation(accuracy, misclassified):+.2f}"

    print("| row | sets | accuracy % (over sets, each the mean of its evaluation seeds) | accuracy % (every "
          "set × seed) | mean teacher difficulty | teacher-misclassified % | r(accuracy, misclassified) over "
          "sets |\n|---|---|---|---|---|---|---|")
    for row, runs in rows.items():
        per_set = [statistics.mean(r["accuracies"]) for r in runs]
        every = [a for r in runs for a in r["accuracies"]]
        print(f"| `{row}` | {len(runs)} | {mean_std(per_set)} | {mean_std(every)} (n={len(every)}) | "
              f"{mean_std([r['difficulty'] for r in runs])} | {mean_std([r['misclassified'] for r in runs])} | "
              f"{correlation(runs)} |")
    everyone = [r for runs in rows.values() for r in runs]
    print(f"\nOver all {len(everyone)} sets: r(accuracy, misclassified) = {correlation(everyone)}")


if __name__ == "__main__":
    main()
