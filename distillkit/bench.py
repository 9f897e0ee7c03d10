"""``distillkit bench SUITE [overrides] [--out DIR] [--check THRESHOLDS] [--only KEY=V[,V]] [--dry-run]``: a matrix of
methods × datasets × IPCs under one protocol.

A suite is a file of the ``conf/bench/`` group (``smoke``, ``cpu``, ``paper``) or a path to a YAML file of the
same shape: the budget, datasets, IPCs and seeds of every cell, and the methods, each with the overrides its
cells add. Every cell is one ``distillkit run`` job, launched through Hydra multirun (one sweep over the IPCs per
method and dataset), so ``hydra/launcher=submitit_slurm`` and every other override work unchanged. A cell runs in
``OUT/<method>/<dataset>_ipc<ipc>/`` (a method whose run is one measurement, SSD-KD's, runs its seeds as runs,
in ``seed<s>/`` below that); one whose ``results.json`` holds the same resolved config (its
fingerprint) is finished and skipped, and an interrupted cell resumes from its checkpoints, so an interrupted
bench is simply run again. ``--only`` runs and checks part of the matrix (``dataset=digits``, ``method=random,dm``),
in the same folders, so a long suite can be run a slice at a time; the report is always of every finished cell
of the suite. The report (:mod:`distillkit.report`) goes to ``OUT/bench.json``, ``OUT/bench.md``
and ``OUT/*.png``; ``--check`` compares it with thresholds (:mod:`distillkit.thresholds`).
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import hydra.utils
from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distillkit.config import compose_config, config_dir, group_options
from distillkit.errors import UserError
from distillkit.results import fingerprint
from distillkit.validation import explain

log = logging.getLogger("distillkit")


class Exclusion(BaseModel):
    """Cells not run: every given key must match (an omitted key matches all)."""

    model_config = ConfigDict(extra="forbid")
    method: str | None = None
    dataset: str | None = None
    ipc: int | None = None


class Suite(BaseModel):
    """A bench suite (``conf/bench/<name>.yaml``); its keys are documented in ``conf/bench/smoke.yaml``."""

    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    budget: str
    datasets: list[str] = Field(min_length=1)
    ipcs: list[int] = Field(min_length=1)
    seeds: int = Field(ge=1)
    methods: dict[str, list[str]] = Field(min_length=1)
    overrides: list[str] = []
    exclude: list[Exclusion] = []


@dataclass(frozen=True)
class Cell:
    method: str  # the suite's name for the method (its ``method=`` override may differ)
    dataset: str
    ipc: int
    overrides: tuple[str, ...]  # every override of the cell's run but ``ipc``
    seed: int | None = None  # the run's seed when seeds are runs (a run is one measurement); None: evaluator seeds

    @property
    def name(self) -> str:
        """How reports and thresholds name the cell."""
        return f"{self.method}/{self.dataset}/ipc{self.ipc}"

    @property
    def title(self) -> str:
        """How the bench's log names its run: the cell, and its seed when seeds are runs."""
        return self.name if self.seed is None else f"{self.name} seed {self.seed}"

    @property
    def coordinates(self) -> dict[str, str]:
        """Its place in the matrix, keyed and spelled as ``--only`` and ``exclude:`` name it."""
        return {"method": self.method, "dataset": self.dataset, "ipc": str(self.ipc)}

    @property
    def subdir(self) -> str:
        """Its run's folder below the bench's, with ``${ipc}`` for the IPC (Hydra's sweep subdir)."""
        return f"{self.method}/{self.dataset}_ipc${{ipc}}" + ("" if self.seed is None else f"/seed{self.seed}")

    def run_dir(self, out: Path) -> Path:
        return out / self.subdir.replace("${ipc}", str(self.ipc))

    def all_overrides(self) -> list[str]:
        return [*self.overrides, f"ipc={self.ipc}"]


def load_suite(name_or_path: str) -> Suite:
    """A suite by name (``conf/bench/``) or by path; a bad file or value is one line."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.is_file()):
        if name_or_path not in group_options("bench"):
            raise UserError(f"unknown bench suite '{name_or_path}' (choose from: {', '.join(group_options('bench'))}, "
                            "or give a path to a suite .yaml)")
        path = config_dir() / "bench" / f"{name_or_path}.yaml"
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as err:  # a YAML syntax error or an unreadable file
        raise UserError(f"{path}: not a readable suite ({str(err).splitlines()[0]})") from None
    try:
        suite = Suite.model_validate({"name": path.stem, **(raw or {})})
    except ValidationError as err:
        raise UserError(f"{path}: {explain(err)}") from None
    for group, names in (("dataset", suite.datasets), ("budget", [suite.budget]),
                         ("method", [method_choice(m, o) for m, o in suite.methods.items()])):
        unknown = [n for n in names if n not in group_options(group)]
        if unknown:
            raise UserError(f"{path}: unknown {group} '{unknown[0]}' (choose from: {', '.join(group_options(group))})")
    if min(suite.ipcs) < 1:
        raise UserError(f"{path}: ipcs must be ≥ 1 (got {min(suite.ipcs)})")
    return suite


def method_choice(method: str, overrides: list[str]) -> str:
    """The ``method=`` a suite entry runs: its own ``method=`` override, else its name."""
    chosen = [o.split("=", 1)[1] for o in overrides if o.startswith("method=")]
    return chosen[-1] if chosen else method


def cells(suite: Suite, user_overrides: list[str]) -> list[Cell]:
    """The suite's matrix less its exclusions, in suite order (methods, then datasets, then IPCs, then seeds). A
    method whose run is one measurement (:func:`seeds_are_runs`) gets a cell per seed, ``seed=0…``, in the cell's
    folder (``seed<s>/``); the report joins them into one row."""
    matrix = []
    for method, extra in suite.methods.items():
        own = [o for o in extra if not o.startswith("method=")]
        for dataset in suite.datasets:
            overrides = (f"method={method_choice(method, extra)}", f"dataset={dataset}", f"budget={suite.budget}",
                         f"evaluator.num_seeds={suite.seeds}", *suite.overrides, *own, *user_overrides)
            runs = [(overrides, None)]
            if seeds_are_runs(overrides):
                runs = [((*overrides, f"seed={seed}"), seed) for seed in range(suite.seeds)]
            for ipc in suite.ipcs:
                for run_overrides, seed in runs:
                    cell = Cell(method, dataset, ipc, run_overrides, seed)
                    if not any(excluded(rule, cell) for rule in suite.exclude):
                        matrix.append(cell)
    return matrix


def seeds_are_runs(overrides: tuple[str, ...]) -> bool:
    """Whether the run's schedule trains the one network its evaluator measures (SSD-KD's rounds), so that
    ``evaluator.num_seeds`` cannot give the suite's seeds: the seeds must be whole runs."""
    target = run_config(list(overrides)).schedule._target_
    return getattr(hydra.utils.get_class(target), "trains_the_measured_network", False)


ONLY_KEYS = ("method", "dataset", "ipc")


def selection(suite: Suite, only: tuple[str, ...] | list[str]) -> dict[str, set[str]]:
    """``--only KEY=V[,V]`` options as {key: values}; a key not in :data:`ONLY_KEYS` or a value no cell of the
    suite has is one line (a typo would otherwise run nothing, silently)."""
    chosen: dict[str, set[str]] = {}
    have = {"method": list(suite.methods), "dataset": suite.datasets, "ipc": [str(i) for i in suite.ipcs]}
    for item in only:
        key, sep, values = item.partition("=")
        if not sep or key not in ONLY_KEYS or not values:
            raise UserError(f"--only {item}: expected KEY=VALUE[,VALUE] with KEY one of {', '.join(ONLY_KEYS)}")
        for value in values.split(","):
            if value not in have[key]:
                raise UserError(f"--only {item}: suite '{suite.name}' has no {key} '{value}' "
                                f"(it has: {', '.join(have[key])})")
        chosen[key] = chosen.get(key, set()) | set(values.split(","))
    return chosen


def selected(cell: Cell, chosen: dict[str, set[str]]) -> bool:
    return all(cell.coordinates[key] in allowed for key, allowed in chosen.items())


def excluded(rule: Exclusion, cell: Cell) -> bool:
    return all(want is None or str(want) == cell.coordinates[key] for key, want in rule.model_dump().items())


def run_config(overrides: list[str]):
    """The config a cell's run composes (Hydra's own overrides, a launcher, do not change it)."""
    return compose_config([o for o in overrides if not o.startswith(("hydra.", "hydra/"))])


def expected_fingerprint(cell: Cell) -> str:
    return fingerprint(OmegaConf.to_container(run_config(cell.all_overrides()), resolve=True))


def finished(cell: Cell, out: Path) -> bool:
    """Whether the cell's directory holds an evaluated run of the same config."""
    path = cell.run_dir(out) / "results.json"
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return stored.get("status") == "evaluated" and fingerprint(stored.get("config", {})) == expected_fingerprint(cell)


def sweeps(pending: list[Cell]) -> list[list[Cell]]:
    """Pending cells grouped into Hydra sweeps: one per (method, dataset, overrides), over its IPCs."""
    groups: dict[tuple, list[Cell]] = defaultdict(list)
    for cell in pending:
        groups[(cell.method, cell.dataset, cell.overrides)].append(cell)
    return list(groups.values())


def sweep_command(group: list[Cell], out: Path) -> list[str]:
    first = group[0]
    ipcs = ",".join(str(c.ipc) for c in group)
    return [sys.executable, "-m", "distillkit", "run", "-m", *first.overrides, f"ipc={ipcs}",
            f"hydra.sweep.dir={out}", f"hydra.sweep.subdir={first.subdir}"]


def run_child(command: list[str]) -> int:
    """Run one cell's sweep and return its exit code. Stopping the bench (SIGTERM from ``kill``, a scheduler's
    pre-emption, or Ctrl-C) stops the sweep with it: an orphaned sweep would go on writing its cells while a rerun
    of the bench starts the same cells again beside it."""
    def stop(signum, frame):
        raise SystemExit(128 + signum)

    child = subprocess.Popen(command)
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        return child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
        if child.poll() is None:
            child.terminate()
            child.wait()


def run_bench(suite_name: str, overrides: list[str], out: Path | None, thresholds_path: Path | None,
              dry_run: bool = False, only: tuple[str, ...] | list[str] = ()) -> int:
    """``distillkit bench``: run what is not finished (of the ``only`` selection), write the report of the whole
    suite, check the selection's thresholds; the exit code."""
    from distillkit.report import collect, write_report
    from distillkit.thresholds import check, load_thresholds

    suite = load_suite(suite_name)
    thresholds = load_thresholds(thresholds_path) if thresholds_path else None  # a bad file fails before any run
    out = (out or Path("outputs") / "bench" / suite.name).resolve()
    every = cells(suite, overrides)
    chosen = selection(suite, only)
    matrix = [c for c in every if selected(c, chosen)]
    done = [c for c in matrix if finished(c, out)]
    pending = [c for c in matrix if c not in done]
    part = f" (--only {' '.join(only)}: {len(matrix)} of {len(every)})" if only else ""
    print(f"bench {suite.name}: {len(matrix)} cells{part}, {len(done)} finished, {len(pending)} to run -> {out}",
          flush=True)
    if dry_run:
        for group in sweeps(pending):
            print(" ".join(sweep_command(group, out)[2:]))
        return 0
    failed = []
    for group in sweeps(pending):
        names = ", ".join(c.title for c in group)
        print(f"bench: running {names}", flush=True)
        if run_child(sweep_command(group, out)) != 0:
            failed += [c for c in group if not finished(c, out)]
    rows = collect([c.run_dir(out) / "results.json" for c in every if (c.run_dir(out) / "results.json").is_file()])
    report = write_report(rows, out, f"bench {suite.name}: {suite.description}")
    print(f"bench {suite.name}: report -> {report}", flush=True)
    status = 0
    if failed:
        titles = ", ".join(c.title for c in failed)
        print(f"bench {suite.name}: {len(failed)} cell(s) failed: {titles}", file=sys.stderr)
        status = 1
    if thresholds is not None:
        lines = check(rows, thresholds, [c.name for c in matrix])
        for line in lines:
            print(line, file=sys.stderr)
        print(f"bench {suite.name}: {len(lines)} regression(s) against {thresholds_path}", flush=True)
        status = status or (1 if lines else 0)
    return status
