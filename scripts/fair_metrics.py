"""Fair metrics for runs already measured: each method row against random and full rows, seed by seed.

    python scripts/fair_metrics.py --random R [--random R2] --full F [--plain NAME=DIR ...] [--hard NAME=DIR ...] ROW ...

A ROW is ``DIR`` (named by its method) or ``NAME=DIR[,DIR...]`` (several runs merged into one row, e.g. one
evaluation seed per distillation seed). A DIR holds ``results.json`` (``distillkit run``) or
``eval_results.json`` (``distillkit eval``). Each row is paired with the ``--random`` row measured on the same
CPU model (else the first one), and with ``--full``:

* one run whose evaluation seeds are the random row's: **paired** (seed s against seed s: the same network
  initialisation and augmentation draws; the subset of ``method=random`` is one draw), Student-t interval;
* otherwise (merged runs with one evaluation seed each): Welch's **unpaired** interval.

``--plain NAME=DIR`` gives a row's evaluation without augmentation (``evaluator.dsa=false``; NAME ``random``
for the random row's), for ARS; ``--hard NAME=DIR`` a soft-label row's evaluation with its hard labels, for
HLR and a label-fair IOR. Without them those cells print "—" and the reason is listed under the table.
Prints one markdown table per unit mode (distillkit.fairness: fraction and DD-Ranking 0.2.0 compat).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from distillkit import fairness


@dataclass
class Row:
    name: str
    runs: list[float]      # accuracies in %, in seed order (merged runs: run order)
    seeds: list[int]       # evaluation seeds of ``runs``
    labels: str
    host: str
    merged: int            # how many results files


def load(path: Path) -> dict:
    for name in ("results.json", "eval_results.json"):
        if (path / name).is_file():
            return json.loads((path / name).read_text())
    raise SystemExit(f"{path}: no results.json or eval_results.json")


def row(name: str | None, paths: list[Path]) -> Row:
    runs, seeds, labels, hosts = [], [], set(), set()
    for path in paths:
        payload = load(path)
        evaluator = payload.get("evaluator") or payload["config"]["evaluator"]
        accuracy = payload["accuracy"]["runs"]
        runs += accuracy
        seeds += list(range(int(evaluator["seed"]), int(evaluator["seed"]) + len(accuracy)))
        labels.add(payload.get("labels"))
        hosts.add(re.sub(r" \(\d+ threads?\)$", "", payload.get("device_name", "")))
        name = name or payload["method"]
    return Row(name, runs, seeds, "/".join(sorted(map(str, labels))), "/".join(sorted(hosts)), len(paths))


def parse(spec: str) -> Row:
    name, _, dirs = spec.rpartition("=")
    return row(name or None, [Path(d) for d in dirs.split(",")])


def named(specs: list[str]) -> dict[str, Row]:
    return {r.name: r for r in map(parse, specs)}


def paired(a: Row, b: Row) -> bool:
    return a.merged == 1 and b.merged == 1 and a.seeds == b.seeds


def mean(values) -> float:
    return statistics.fmean(values)


def fmt(value: float, mode: str) -> str:
    return f"{value:.4f}" if mode == "fraction" else (f"{value:.2f}" if abs(value) < 1e4 else f"{value:.3g}")


def table(rows: list[Row], randoms: list[Row], full: Row, plain: dict[str, Row], hard: dict[str, Row],
          mode: str) -> tuple[list[str], list[str]]:
    units = fairness.UNITS[mode]
    header = "| row | labels | n | accuracy % | random % (host) | gain over random [95 % CI] | survives? | HLR | IOR | LRS | ARS |"
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|"]
    notes = []
    for r in rows:
        random = next((x for x in randoms if x.host == r.host), randoms[0])
        soft = "soft" in r.labels
        syn_hard = hard[r.name] if soft and r.name in hard else (None if soft else r)
        # IOR and the gain compare like with like (hard labels); a soft row without its hard-label evaluation
        # is shown against the hard-label random row and flagged: that gain credits the labels too
        compared = syn_hard or r
        pair = paired(compared, random)
        ci = (fairness.paired_interval if pair else fairness.unpaired_interval)(compared.runs, random.runs, mode)
        flag = "" if syn_hard else " †"
        survives = ("— (the baseline itself)" if r.runs == random.runs else "yes" if ci.low > 0 else
                    "no (below random)" if ci.high < 0 else "no (interval spans 0)")
        gain = (f"{fmt(ci.mean, mode)} [{fmt(ci.low, mode)}, {fmt(ci.high, mode)}] "
                f"{'paired' if pair else 'unpaired'}{flag}")
        ior = fmt(mean(fairness.ior(compared.runs, random.runs, mode)), mode) + flag if pair else \
            fmt(ci.mean, mode) + flag
        if syn_hard is not None and paired(syn_hard, full):
            hlr_value = fmt(mean(fairness.hlr(full.runs, syn_hard.runs, mode)), mode)
            lrs_value = fmt(mean(fairness.lrs(full.runs, syn_hard.runs, syn_hard.runs, random.runs, mode)), mode) \
                if pair else "—"
        elif syn_hard is not None:  # not seed-paired with full: the mean difference, LRS of the means
            hlr_value = fmt(fairness.differences([mean(full.runs)], [mean(syn_hard.runs)], mode)[0], mode) + " ‡"
            lrs_value = fmt(fairness.lrs([mean(full.runs)], [mean(syn_hard.runs)], [mean(syn_hard.runs)],
                                         [mean(random.runs)], mode)[0], mode) + " ‡"
        else:
            hlr_value = lrs_value = "—"
            notes.append(f"{r.name}: HLR and LRS need its evaluation with hard labels (--hard), not measured")
        plain_random = plain.get("random")
        if r.name in plain and plain_random is not None and pair and paired(plain[r.name], plain_random) \
                and syn_hard is not None:
            ars_value = fmt(mean(fairness.ars(compared.runs, random.runs, plain[r.name].runs, plain_random.runs,
                                              mode)), mode)
        else:
            ars_value = "—"
            notes.append(f"{r.name}: ARS needs seed-paired evaluations without augmentation of it and of random "
                         f"(--plain); " + ("not measured" if r.name not in plain else "not seed-paired"))
        lines.append(f"| {r.name} | {r.labels} | {len(r.runs)} | {mean(r.runs):.2f} | {mean(random.runs):.2f} "
                     f"({random.host}) | {gain} | {survives} | {hlr_value} | {ior} | {lrs_value} | {ars_value} |")
    lines.append("")
    lines.append(f"Units ({mode}): gain, HLR, IOR in {units['hlr']}; LRS, ARS {units['lrs']}. Full-data row: "
                 f"{mean(full.runs):.2f} % ({full.host}, seeds {full.seeds}).")
    return lines, notes


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", help="DIR or NAME=DIR[,DIR...]")
    parser.add_argument("--random", action="append", required=True, help="a random row (DIR); several: per host")
    parser.add_argument("--full", required=True, help="the full-data row (DIR)")
    parser.add_argument("--plain", action="append", default=[], help="NAME=DIR: NAME's evaluation without DSA")
    parser.add_argument("--hard", action="append", default=[], help="NAME=DIR: a soft row's hard-label evaluation")
    args = parser.parse_args(argv)
    rows = [parse(spec) for spec in args.rows]
    randoms = [parse(spec) for spec in args.random]
    full = parse(args.full)
    plain, hard = named(args.plain), named(args.hard)
    for mode in fairness.MODES:
        lines, notes = table(rows, randoms, full, plain, hard, mode)
        print(f"### {mode}\n")
        print("\n".join(lines))
        if notes and mode == fairness.MODES[0]:
            print("\nMissing cells:\n" + "\n".join(f"* {n}" for n in dict.fromkeys(notes)))
        print()
    print("† soft-label row against the hard-label random row (no hard-label evaluation of the set): the gain "
          "includes what the labels add. ‡ not seed-paired with the full row: difference of means.")


if __name__ == "__main__":
    main()
