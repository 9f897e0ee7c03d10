"""Collect results.json files into a Markdown table with the published number beside each row.

    python scripts/results_table.py outputs/bench/**/results.json
    python scripts/results_table.py outputs/bench            # every results.json below a folder
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rows(paths):
    for path in paths:
        r = json.loads(Path(path).read_text())
        acc = r["accuracy"]
        published = "—" if r.get("published") is None else f"{r['published']:.1f}"
        seconds = sum(r.get("seconds", {}).values())
        yield (f"| {r['method']} | {r['dataset']} | {r['ipc']} | {r.get('budget', '—')} | "
               f"{acc['mean']:.2f} ± {acc['std']:.2f} (n={len(acc['runs'])}) | {published} | "
               f"{seconds:.0f} | {r.get('device_name', r.get('device', '—'))} |")


def main(argv: list[str]) -> None:
    files = []
    for arg in argv or ["outputs"]:
        p = Path(arg)
        files += sorted(p.rglob("results.json")) if p.is_dir() else [p]
    print("| method | dataset | IPC | budget | accuracy % (mean ± std) | published | wall s | hardware |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows(files):
        print(row)


if __name__ == "__main__":
    main(sys.argv[1:])
