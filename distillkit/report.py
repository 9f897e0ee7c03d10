"""``distillkit report RUN_DIR… | SWEEP_DIR [--out DIR]``: one table and its plots from finished runs.

Every ``results.json`` below the given folders is a row (any mix of methods, datasets and evaluators): the
primary metric as mean ± std over its seeds, the published number beside it, the gain over the ``random`` row
of the same dataset, IPC and budget (paired over seeds when both rows have the same seeds), the wall-clock of
the run and its peak memory (the cost ledger's, when the run has one). Runs whose configs differ only in their
seed are one row over their seeds: the top-level ``seed`` by default (a method run once per seed, as its seed
changes what it distils), or another config key named by ``--seed-key`` (DGS's ``sampler.seed``). ``--columns
KEY[,KEY]`` adds a column per dotted key of the results file (``eval_lr``, ``roles.experts.held_out_accuracy``,
``config.generator.lr_img``), so a table of a sweep's levers is generated, not typed.
``distillkit bench`` writes the same report for its cells. Files: ``report.json`` / ``bench.json`` (the rows),
``.md`` (the table, and below it every cell that does not beat its random row) and plots — the primary metric
against IPC, one figure per dataset and metric, and against wall-clock. ``--into DOC.md`` rewrites the generated
tables of a document instead (:func:`refresh_document`).
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

from distillkit.errors import UserError
from distillkit.fairness import t_interval
from distillkit.io import atomic_path, write_json
from distillkit.results import fingerprint
from distillkit.stages import Metric


@dataclass
class Row:
    cell: str  # <method>/<dataset>/ipc<ipc>: what thresholds name
    method: str
    dataset: str
    ipc: int | None
    budget: str | None
    metric: str  # the primary metric's name
    unit: str
    higher_is_better: bool
    mean: float
    std: float
    runs: list[float]
    published: float | None
    seconds: float
    peak_mib: float | None
    device: str
    run_dir: str
    metrics: dict  # every named metric of the run: {name: {mean, std, runs}}
    same_but_seed: str | None = None  # fingerprint of the run's config less its seed: runs sharing it are one row
    seeds: list[int] | None = None  # seeds (the seed key's values) of the runs in this row (None: a run without one)
    gain: float | None = None  # over the random row of the same dataset, IPC, budget and metric
    gain_ci: float | None = None  # half-width of its 95 % interval, paired over seeds; None with < 2 pairs
    columns: dict = field(default_factory=dict)  # {dotted key: value} of the keys asked by --columns


@dataclass(frozen=True)
class ReportOptions:
    seed_key: str = "seed"  # the config key whose values tell the runs of one row apart
    columns: tuple[str, ...] = ()  # dotted keys of results.json shown as extra columns


def split_options(tokens: list[str]) -> tuple[list[str], ReportOptions]:
    """The run folders and the options among ``tokens`` (a command line's, or a generated block's opening
    comment): ``--seed-key KEY`` and ``--columns KEY[,KEY]``, anywhere."""
    values: dict[str, str] = {}
    paths: list[str] = []
    rest = iter(tokens)
    for token in rest:
        if token in ("--seed-key", "--columns"):
            value = next(rest, None)
            if value is None or value.startswith("-"):
                raise UserError(f"{token} needs a value")
            values[token] = value
        elif token.startswith("-"):
            raise UserError(f"{token}: not an option of 'distillkit report' (--out, --seed-key, --columns, --into)")
        else:
            paths.append(token)
    columns = tuple(c for c in values.get("--columns", "").split(",") if c)
    return paths, ReportOptions(values.get("--seed-key", "seed"), columns)


def read_row(path: Path, seed_key: str = "seed", columns: tuple[str, ...] = ()) -> Row | None:
    """The row of one results file; None for a run that stopped before evaluating. A run in the bench layout
    (``<name>/<dataset>_ipc<ipc>/``, or ``…/seed<s>/`` below it) is the cell ``<name>/<dataset>/ipc<ipc>`` — the
    suite's name for the method, which may differ from ``method.name`` (two cells of one method with other
    overrides). ``seed_key`` is the dotted config key whose value tells the runs of one row apart; ``columns`` are
    the dotted keys whose values the row carries (None where the file has no such key)."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: not a readable results file ({err})") from None
    primary = payload.get("primary_metric")
    if not primary and "accuracy" in payload:  # a results.json older than named metrics: accuracy was the metric
        primary = {"name": "accuracy", "higher_is_better": True, "unit": "%"}
        payload.setdefault("metrics", {"accuracy": payload["accuracy"]})
    if not primary:
        return None
    metric = payload["metrics"][primary["name"]]
    cost = payload.get("cost") or {}
    seed_run = re.fullmatch(r"seed\d+", path.parent.name)  # a bench cell whose seeds are runs: <cell>/seed<s>/
    cell_dir = path.parent.parent if seed_run else path.parent
    in_bench_layout = cell_dir.name == f"{payload['dataset']}_ipc{payload['ipc']}"
    method = cell_dir.parent.name if in_bench_layout else payload["method"]
    return Row(cell=f"{method}/{payload['dataset']}/ipc{payload['ipc']}", method=payload["method"],
               dataset=payload["dataset"], ipc=payload.get("ipc"), budget=payload.get("budget"),
               metric=primary["name"], unit=primary.get("unit") or "", higher_is_better=primary["higher_is_better"],
               mean=metric["mean"], std=metric["std"], runs=list(metric["runs"]), published=payload.get("published"),
               seconds=sum(payload.get("seconds", {}).values()), peak_mib=cost.get("peak_rss_mib"),
               device=payload.get("device_name", payload.get("device", "")), run_dir=str(path.parent),
               metrics=payload["metrics"], columns={key: lookup(payload, key) for key in columns},
               **seed_of(payload, seed_key))


def lookup(payload: dict, dotted: str):
    """The value at a dotted key of a results file (``roles.experts.held_out_accuracy``), None when absent."""
    node = payload
    for key in dotted.split("."):
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def seed_of(payload: dict, seed_key: str) -> dict:
    """A run's ``seeds`` (its value of ``seed_key``) and ``same_but_seed`` (its config's fingerprint without that
    key). A run without the key (a ``random`` row beside DGS's, whose sampler has no seed) has neither and stays a
    row of its own; results files without a config fall back on their top-level seed."""
    alone = {"seeds": None, "same_but_seed": None}
    config = payload.get("config")
    if not config:
        return alone if payload.get("seed") is None or seed_key != "seed" else {**alone, "seeds": [payload["seed"]]}
    parent, _, leaf = seed_key.rpartition(".")
    rest = copy.deepcopy(config)
    node = lookup(rest, parent) if parent else rest
    if not isinstance(node, dict) or leaf not in node:
        return alone
    seed = node.pop(leaf)
    return {"seeds": [seed], "same_but_seed": fingerprint(rest)}


def collect(paths: list[Path], seed_key: str = "seed", columns: tuple[str, ...] = ()) -> list[Row]:
    """Rows of every ``results.json`` (or ``eval_results.json``) in or below ``paths``, runs that differ only in
    ``seed_key`` joined, gains filled in, each carrying the values of ``columns``."""
    files = []
    for path in map(Path, paths):
        if not path.exists():
            raise UserError(f"{path}: no such file or folder")
        if path.is_file():
            files.append(path)
        else:
            files += sorted(p for pattern in ("results.json", "eval_results.json") for p in path.rglob(pattern))
    rows = [row for f in dict.fromkeys(files) if (row := read_row(f, seed_key, columns)) is not None]
    if rows and all(r.seeds is None for r in rows) and seed_key != "seed":
        raise UserError(f"no run under {', '.join(map(str, paths))} has the config key {seed_key!r} (--seed-key)")
    for key in columns:
        if rows and all(r.columns[key] is None for r in rows):  # a typo would otherwise be a column of dashes
            raise UserError(f"no run under {', '.join(map(str, paths))} has the key {key!r} (--columns)")
    rows = merge_seeds(rows)
    add_gains(rows)
    return rows


def merge_seeds(rows: list[Row]) -> list[Row]:
    """Rows whose runs differ only in their seed (``seed_of``) as one row: every metric's runs joined in seed order
    (mean and population std over them all), the mean wall-clock per run, the highest peak memory, and for run
    directory the pattern that names them (``out/ssdkd_s{0,1,2}``). Two runs of one config and one seed stay two
    rows (nothing to average)."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for r in rows:
        groups[r.same_but_seed or r.run_dir].append(r)
    merged = []
    for group in groups.values():
        seeds = [s for r in group for s in r.seeds or []]
        if len(group) == 1 or len(seeds) != len(set(seeds)) or len(seeds) != len(group):
            merged += group
            continue
        group.sort(key=lambda r: r.seeds)
        seeds.sort()
        metrics = {name: Metric.of([x for r in group for x in r.metrics[name]["runs"]]).as_dict()
                   for name in set.intersection(*(set(r.metrics) for r in group))}
        first, primary = group[0], metrics[group[0].metric]
        peaks = [r.peak_mib for r in group if r.peak_mib is not None]
        merged.append(Row(**{**asdict(first), "mean": primary["mean"], "std": primary["std"], "runs": primary["runs"],
                             "seconds": sum(r.seconds for r in group) / len(group),
                             "peak_mib": max(peaks, default=None),
                             "run_dir": runs_pattern([r.run_dir for r in group]), "metrics": metrics,
                             "seeds": seeds, "columns": joined_columns(group)}))
    return merged


def joined_columns(group: list[Row]) -> dict:
    """The extra columns of runs joined into one row: a value they share, else their values in seed order."""
    joined = {}
    for key in group[0].columns:
        values = [r.columns.get(key) for r in group]
        joined[key] = values[0] if all(v == values[0] for v in values) else values
    return joined


def runs_pattern(run_dirs: list[str]) -> str:
    """The folders of one row's runs as one shell brace pattern: their common folder, the common start of the
    rest, then what differs (``out/dgs_seed0``, ``out/dgs_seed1`` → ``out/dgs_seed{0,1}``)."""
    root = os.path.commonpath(run_dirs)
    rest = [os.path.relpath(d, root) for d in run_dirs]
    stem = os.path.commonprefix(rest)
    return os.path.join(root, stem + "{" + ",".join(r[len(stem):] for r in rest) + "}")


def add_gains(rows: list[Row]) -> None:
    """Each row's gain over the random row of the same dataset, IPC, budget and metric — of several such rows,
    the nearest one in the folder tree (the same sweep or bench before another)."""
    random = defaultdict(list)
    for r in rows:
        if is_random_baseline(r):
            random[(r.dataset, r.ipc, r.budget, r.metric)].append(r)
    for row in rows:
        candidates = random.get((row.dataset, row.ipc, row.budget, row.metric))
        if not candidates or row in candidates:
            continue
        base = max(candidates, key=lambda r: shared_depth(r.run_dir, row.run_dir))
        row.gain = row.mean - base.mean
        if len(row.runs) == len(base.runs) >= 2:
            interval = t_interval([a - b for a, b in zip(row.runs, base.runs)])
            row.gain_ci = interval.high - interval.mean


def is_random_baseline(row: Row) -> bool:
    """A row gains are measured against: the cell ``random``, or a ``random_<name>`` cell of method ``random``
    under another evaluator (``random_kd``: KD on the random real subset, the baseline of SSD-KD's student
    accuracy; ``random_gen``: a diffusion model trained on it, D2C's FID)."""
    return row.cell.startswith("random/") or (row.method == "random" and row.cell.startswith("random_"))


def shared_depth(a: str, b: str) -> int:
    """How many leading folders two run directories share."""
    return sum(1 for _ in itertools.takewhile(lambda pair: pair[0] == pair[1], zip(Path(a).parts, Path(b).parts)))


def number(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    return f"{value:.2f}" if unit == "%" else f"{value:.4g}"


def markdown(rows: list[Row], title: str | None, columns: tuple[str, ...] = ()) -> str:
    """The table under a ``# title`` (none: the table alone, as a document's generated block embeds it); when two
    rows share a cell name (runs of one method from several folders), a column says which folder each came from;
    ``columns`` (dotted keys the rows carry) follow the metric's mean."""
    shared = len({r.cell for r in rows}) < len(rows)
    root = os.path.commonpath([r.run_dir for r in rows]) if shared else ""
    header = ("| cell | " + ("run | " if shared else "") + "metric | mean ± std (seeds) | "
              + "".join(f"{key} | " for key in columns)
              + "published | gain over random (95 % CI) | wall s per run | peak MiB | hardware |")
    lines = ([f"# {title}", ""] if title else []) + [header, "|---" * (8 + shared + len(columns)) + "|"]
    for r in sorted(rows, key=lambda r: (r.dataset, r.ipc or 0, r.method, r.run_dir)):
        direction = "" if r.higher_is_better else " ↓"
        gain = "—" if r.gain is None else gain_text(r)
        peak = "—" if r.peak_mib is None else f"{r.peak_mib:.0f}"
        run = f"{os.path.relpath(r.run_dir, root)} | " if shared else ""
        extra = "".join(f"{column_value(r.columns.get(key))} | " for key in columns)
        lines.append(f"| {r.cell} | {run}{r.metric}{direction} | {number(r.mean, r.unit)} ± {number(r.std, r.unit)} "
                     f"({len(r.runs)}) | {extra}{number(r.published, r.unit)} | {gain} | {r.seconds:.0f} | {peak} | "
                     f"{r.device} |")
    lines += random_verdicts(rows)
    for metric in sorted({r.metric for r in rows}):
        lines += metrics_table([r for r in rows if r.metric == metric])
    return "\n".join(lines) + "\n"


def column_value(value) -> str:
    """An extra column's cell: numbers to 4 significant digits, the values of joined runs separated by slashes."""
    if isinstance(value, list):
        return " / ".join(map(column_value, value))
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}" if math.isfinite(value) else str(value)
    return str(value)


def gain_text(row: Row) -> str:
    """The gain over random with the half-width of its interval: ``+3.27 ± 0.86``."""
    value = f"{row.gain:+.2f}" if row.unit == "%" else f"{row.gain:+.4g}"
    return value + ("" if row.gain_ci is None else f" ± {number(row.gain_ci, row.unit)}")


def against_random(row: Row) -> str | None:
    """Whether the row beats its random row — on the better side of 0 with its whole paired 95 % interval — or
    ties it (the interval holds 0), or loses; None without a random row to compare with."""
    if row.gain is None:
        return None
    better = row.gain if row.higher_is_better else -row.gain
    if row.gain_ci is None:
        return "ahead of random, untested (fewer than 2 paired seeds)" if better > 0 else "does not beat random"
    if better - row.gain_ci > 0:
        return "beats random"
    return "worse than random" if better + row.gain_ci < 0 else "not distinguishable from random"


def random_verdicts(rows: list[Row]) -> list[str]:
    """A line for every cell not shown to beat its random row (behind it, tied with it, or ahead on too few paired
    seeds to test), so a table never hides one."""
    verdicts = [(r, v) for r in rows if (v := against_random(r)) is not None]
    if not verdicts:
        return []
    shared = {r.cell for r in rows if sum(o.cell == r.cell for o in rows) > 1}  # named by their folder too
    misses = [f"* {r.cell}{f' ({Path(r.run_dir).name})' if r.cell in shared else ''}: {v}, gain {gain_text(r)}"
              for r, v in verdicts if v != "beats random"]
    if not misses:
        return ["", f"Every cell with a random row beats it ({len(verdicts)} cells, paired 95 % intervals)."]
    head = (f"Cells not shown to beat their random row ({len(misses)} of {len(verdicts)}; paired 95 % intervals, "
            "'not distinguishable' when the interval holds 0):")
    return ["", head, "", *misses]


def metrics_table(rows: list[Row]) -> list[str]:
    """Every named metric of runs that report more than their primary one (the generative evaluator's FIDs per
    training length, sample accuracy, copy rate…); a metric measured at several lengths only per length."""
    names = {name for r in rows for name in r.metrics}
    if len(names) < 2:
        return []
    per_length = {name.split("@")[0] for name in names if "@" in name}
    columns = sorted((n for n in names if "@" in n or n not in per_length),
                     key=lambda n: (int(n.split("@")[1]) if "@" in n else 0, n))
    lines = ["", f"Every metric of the rows judged by {rows[0].metric}:", "",
             "| cell | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for r in sorted(rows, key=lambda r: (r.dataset, r.ipc or 0, r.method)):
        cells = [f"{r.metrics[c]['mean']:.4g} ± {r.metrics[c]['std']:.2g}" if c in r.metrics else "—" for c in columns]
        lines.append(f"| {r.cell} | " + " | ".join(cells) + " |")
    return lines


def plots(rows: list[Row], out: Path) -> list[Path]:
    """``<metric>_vs_ipc_<dataset>.png`` (a line per method) and ``<metric>_vs_seconds.png`` (a point per cell)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    by_figure: dict[tuple[str, str], dict[str, list[Row]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_figure[(r.metric, r.dataset)][r.method].append(r)
    for (metric, dataset), methods in sorted(by_figure.items()):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for method, cells in sorted(methods.items()):
            cells = sorted(cells, key=lambda r: r.ipc or 0)
            ax.errorbar([r.ipc for r in cells], [r.mean for r in cells], yerr=[r.std for r in cells],
                        marker="o", capsize=3, label=method)
        ax.set(xscale="log", xlabel="images per class", ylabel=label(next(iter(methods.values()))[0]), title=dataset)
        ax.legend(fontsize=7)
        written.append(save(fig, out / f"{metric}_vs_ipc_{dataset}.png"))
    for metric in sorted({r.metric for r in rows}):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for r in (r for r in rows if r.metric == metric):
            ax.errorbar(r.seconds, r.mean, yerr=r.std, marker="o", capsize=3)
            ax.annotate(r.cell, (r.seconds, r.mean), fontsize=6)
        ax.set(xscale="log", xlabel="wall-clock (s)", ylabel=label(next(r for r in rows if r.metric == metric)))
        written.append(save(fig, out / f"{metric}_vs_seconds.png"))
    plt.close("all")
    return written


def label(row: Row) -> str:
    """The axis label of a row's metric: its name, its unit, and which way is better."""
    unit = f" ({row.unit})" if row.unit else ""
    return f"{row.metric}{unit}, {'higher' if row.higher_is_better else 'lower'} is better"


def save(fig, path: Path) -> Path:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    return path


def write_report(rows: list[Row], out: Path, title: str, stem: str = "bench", columns: tuple[str, ...] = ()) -> Path:
    """``out/<stem>.json``, ``out/<stem>.md`` and the plots; returns the Markdown file."""
    out.mkdir(parents=True, exist_ok=True)
    figures = plots(rows, out) if rows else []
    write_json(out / f"{stem}.json", {"title": title, "rows": [asdict(r) for r in rows],
                                      "plots": [p.name for p in figures]})
    text = markdown(rows, title, columns) + "".join(f"\n![{p.stem}]({p.name})\n" for p in figures)
    with atomic_path(out / f"{stem}.md") as tmp:
        Path(tmp).write_text(text)
    return out / f"{stem}.md"


def report_runs(paths: list[Path], out: Path | None, options: ReportOptions = ReportOptions()) -> int:
    """``distillkit report``: the table of every run below ``paths``, printed and written to ``out`` (default:
    the folder the paths share — the path itself when there is one — so a report of several runs never lands in
    one run's folder)."""
    rows = collect(paths, options.seed_key, options.columns)
    names = ", ".join(map(str, paths))
    if not rows:
        raise UserError(f"no evaluated run (results.json with metrics) under {names}")
    shared = Path(os.path.commonpath([p.resolve() for p in paths]))
    path = write_report(rows, out or shared, f"report of {names}", stem="report", columns=options.columns)
    print(markdown(rows, f"report of {names}", options.columns), end="")
    print(f"report -> {path}")
    return 0


# A generated block of a Markdown document: the opening comment names the run folders (relative to the directory
# the command runs in, the repository root for docs/results.md) and the report's options (``--seed-key KEY`` when
# the block's rows join runs over another key than ``seed``, ``--columns KEY[,KEY]``); everything up to the closing
# comment is the table.
BLOCK = re.compile(r"(<!-- distillkit report (?P<paths>[^>]*?) -->\n)(?P<body>.*?)(<!-- end report -->)", re.DOTALL)


def refresh_document(doc: Path, check: bool = False) -> int:
    """``distillkit report --into DOC [--check]``: rewrite every generated block of ``DOC`` from the records it
    names, so a document's numbers are the runs' and never retyped. With ``check``, rewrite nothing and exit 1
    naming each block whose table differs from its records (a stale document)."""
    try:
        text = doc.read_text()
    except OSError as err:
        raise UserError(f"{doc}: cannot read it ({err.strerror})") from None
    stale = []

    def regenerate(match: re.Match) -> str:
        paths, options = split_options(match["paths"].split())
        if not paths:
            raise UserError(f"{doc}: a generated block names no run folder ('<!-- distillkit report PATH... -->')")
        rows = collect([Path(p) for p in paths], options.seed_key, options.columns)
        if not rows:
            raise UserError(f"{doc}: no evaluated run under {' '.join(paths)}")
        body = "\n" + markdown(rows, None, options.columns) + "\n"
        if body != match["body"]:
            stale.append(" ".join(paths))
        return match.group(1) + body + match.group(4)

    refreshed, blocks = BLOCK.subn(regenerate, text)
    if not blocks:
        raise UserError(f"{doc}: no generated block ('<!-- distillkit report PATH... -->' … '<!-- end report -->')")
    if check:
        for paths in stale:
            print(f"STALE {doc}: the table of {paths} differs from its records (distillkit report --into {doc})")
        print(f"{doc}: {blocks} generated tables, {len(stale)} stale")
        return 1 if stale else 0
    with atomic_path(doc) as tmp:
        Path(tmp).write_text(refreshed)
    print(f"{doc}: {blocks} generated tables, {len(stale)} rewritten")
    return 0
