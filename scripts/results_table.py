"""Collect results.json files into Markdown tables: accuracy runs with the published number beside each row,
and runs judged by another primary metric (the generative evaluator's FID) with every named metric.

    python scripts/results_table.py outputs/bench/**/results.json
    python scripts/results_table.py outputs/bench            # every results.json below a folder
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def mean_std(metric: dict, digits: str) -> str:
    return f"{metric['mean']:{digits}} ± {metric['std']:{digits}}"


def accuracy_row(r: dict) -> str:
    acc = r["accuracy"]
    published = "—" if r.get("published") is None else f"{r['published']:.1f}"
    seconds = sum(r.get("seconds", {}).values())
    return (f"| {r['method']} | {r['dataset']} | {r['ipc']} | {r.get('budget', '—')} | "
            f"{mean_std(acc, '.2f')} (n={len(acc['runs'])}) | {published} | "
            f"{seconds:.0f} | {r.get('device_name', r.get('device', '—'))} |")


def metric_columns(results: list[dict]) -> list[str]:
    """Every metric the runs report; a metric measured at several lengths (``name@steps``) only per length."""
    names = {name for r in results for name in r["metrics"]}
    per_length = {name.split("@")[0] for name in names if "@" in name}
    kept = [n for n in names if "@" in n or n not in per_length]
    return sorted(kept, key=lambda n: (int(n.split("@")[1]) if "@" in n else 0, n))


def main(argv: list[str]) -> None:
    files = []
    for arg in argv or ["outputs"]:
        p = Path(arg)
        files += sorted(p.rglob("results.json")) if p.is_dir() else [p]
    results = [json.loads(f.read_text()) for f in files]
    accuracy = [r for r in results if "accuracy" in r]
    other = [r for r in results if "accuracy" not in r and "metrics" in r]
    if accuracy:
        print("| method | dataset | IPC | budget | accuracy % (mean ± std) | published | wall s | hardware |")
        print("|---|---|---|---|---|---|---|---|")
        for r in accuracy:
            print(accuracy_row(r))
    if other:
        columns = metric_columns(other)
        print("\n| method | dataset | IPC | budget | " + " | ".join(columns) + " | seconds |")
        print("|---" * (len(columns) + 5) + "|")
        for r in other:
            cells = [mean_std(r["metrics"][c], ".4g") if c in r["metrics"] else "—" for c in columns]
            seconds = sum(r.get("seconds", {}).values())
            print(f"| {r['method']} | {r['dataset']} | {r['ipc']} | {r.get('budget', '—')} | " + " | ".join(cells)
                  + f" | {seconds:.0f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
