"""``distillkit run|eval|bench|report|list``.

``run`` is a plain Hydra app (``-m``, ``--cfg job``, ``--help``, ``hydra.run.dir=`` all work).
Before handing over, its overrides are composed once here so that a user's mistake (unknown
method, unknown key, ``ipc=0``) is one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import sys
from pathlib import Path

from distillkit.config import compose_config, one_line
from distillkit.errors import UserError

USAGE = """usage: distillkit <command> [arguments]

commands:
  run [overrides]          distil and evaluate (a Hydra app: try 'distillkit run --help')
  eval PATH [overrides]    re-evaluate a saved distilled.safetensors (or a .pt with images/labels, or a run's
                           directory)
                           options: --out DIR (where eval_results.json goes; default: beside PATH)
  bench SUITE [overrides]  a matrix of methods × datasets × IPCs (a suite of conf/bench or a .yaml path) through
                           Hydra multirun; finished cells are skipped; writes bench.json, bench.md and plots
                           options: --out DIR (default outputs/bench/SUITE), --check THRESHOLDS.yaml (exit 1 and one
                           line per regressed cell), --only KEY=V[,V] (run and check only the cells whose method,
                           dataset or ipc is one of the values; repeatable), --dry-run (list the runs it would launch)
  report RUN_DIR...        the same table and plots from finished runs (any mix); options: --out DIR (default: the
                           folder the RUN_DIRs share), --seed-key
                           KEY (runs whose configs differ only in KEY are one row; default: seed), --columns
                           KEY[,KEY] (a column per dotted key of results.json: eval_lr, config.generator.lr_img)
  report --into DOC.md     rewrite DOC's generated tables ('<!-- distillkit report RUN_DIR... -->' … '<!-- end
                           report -->') from their runs; with --check, exit 1 naming the stale ones instead
  list                     methods, datasets, models, budgets, bench suites and the other config groups

examples:
  distillkit run                                   # distribution matching, digits, ipc=10, budget=cpu
  distillkit run method=herding dataset=fashion_mnist ipc=10
  distillkit run -m method=random ipc=1,10,50      # a sweep, one directory per job
  distillkit eval outputs/random/digits_ipc10/<time>/distilled.safetensors evaluator.num_seeds=5
  distillkit eval outputs/random/digits_ipc10/<time> evaluator=generative
  distillkit bench smoke --check conf/bench/thresholds/smoke.yaml
  distillkit bench cpu --only dataset=digits --only method=random,dm
  distillkit report outputs/bench/cpu
"""

# Hydra flags that take a value: their value is not an override.
FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                    "--config-dir", "-cd", "--info", "--experimental-rerun"}
HELP_FLAGS = {"--help", "-h", "--hydra-help", "--info", "--shell-completion", "-sc"}

log = logging.getLogger("distillkit")
# Hydra's default job-logging format, so that `distillkit eval`'s lines read like a run's
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"


def split_overrides(args: list[str]) -> tuple[list[str], bool, bool]:
    """(overrides, multirun?, help-like?) from a Hydra command line."""
    overrides, skip = [], False
    multirun = any(a in ("-m", "--multirun") for a in args)
    helpish = any(a in HELP_FLAGS for a in args)
    for arg in args:
        if skip:
            skip = False
        elif arg in FLAGS_WITH_VALUE:
            skip = arg != "--info"  # --info's value is optional
        elif not arg.startswith("-"):
            overrides.append(arg)
    return overrides, multirun, helpish


def expand_sweeps(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Every concrete override list of a sweep (at most 64; beyond that, a sample). An interval (which a
    sweeper plugin such as Optuna draws from) stands for its two ends."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import IntervalSweep
    from hydra.errors import HydraException, OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as err:
        raise UserError(f"cannot parse overrides: {str(err).splitlines()[0]}") from None
    choices = []
    for o in parsed:
        if o.is_sweep_override():
            if not multirun:
                raise UserError(f"'{o.input_line}' is a sweep: add -m to run one job per value")
            if isinstance(o.value(), IntervalSweep):
                values = [o.value().start, o.value().end]
            else:
                try:
                    values = list(o.sweep_string_iterator())
                except HydraException:  # a glob over a config group: Hydra expands it when the sweep starts
                    continue
            choices.append([f"{o.get_key_element()}={v}" for v in values])
        else:
            choices.append([o.input_line])
    return [list(c) for c in itertools.islice(itertools.product(*choices), 64)]


def pop_option(args: list[str], flag: str) -> tuple[str | None, list[str]]:
    """``flag``'s value (None when absent) and the arguments without the pair: ``--out DIR`` & co."""
    if flag not in args:
        return None, args
    i = args.index(flag)
    if i + 1 >= len(args) or args[i + 1].startswith("-"):
        raise UserError(f"{flag} needs a value")
    return args[i + 1], args[:i] + args[i + 2:]


def pop_path(args: list[str], flag: str) -> tuple[Path | None, list[str]]:
    """:func:`pop_option` for a flag whose value is a file or folder (``--out DIR``, ``--check FILE``)."""
    value, rest = pop_option(args, flag)
    return (Path(value) if value is not None else None), rest


def check_composed(cfg):
    """Resolve ``cfg``, check its top-level values and build every stage of the run (nothing works yet);
    returns the plan."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from distillkit.run import plan, validate

    try:
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as err:
        raise UserError(f"config: {one_line(err)}") from None
    validate(cfg)
    return plan(cfg)


def search_space(overrides: list[str]) -> list[str]:
    """The sweeper's own search space (``hydra.sweeper.params``, set by ``conf/hparams_search``) as
    overrides, less the keys ``overrides`` set (the command line wins, as in the sweeper)."""
    params = compose_config(overrides, with_hydra=True).hydra.sweeper.get("params") or {}
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    return [f"{key}={value}" for key, value in params.items() if key not in given]


def sweep_jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Every job a command line may run (at most 64): its combinations and, for a sweep, each one's search space."""
    combos = expand_sweeps(overrides, multirun)
    if not multirun:
        return combos
    jobs = (job for combo in combos for job in expand_sweeps(search_space(combo) + combo, multirun))
    return list(itertools.islice(jobs, 64))


def run_command(args: list[str]) -> int:
    overrides, multirun, helpish = split_overrides(args)
    if not helpish:
        for job in sweep_jobs(overrides, multirun):
            check_composed(compose_config(job))
    from distillkit.app import hydra_app

    sys.argv = ["distillkit run", *args]
    hydra_app()
    return 0


@contextlib.contextmanager
def logging_to(path: Path):
    """Log distillkit's INFO lines (progress, roles, baselines) to stderr and ``path`` while the block runs, as
    Hydra does for ``run``; ``eval`` is not a Hydra app, and without this its log stayed empty for hours."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handlers = [logging.StreamHandler(sys.stderr), logging.FileHandler(path)]
    for handler in handlers:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.setLevel(level)
        for handler in handlers:
            log.removeHandler(handler)
            handler.close()


def eval_command(args: list[str]) -> int:
    from omegaconf import open_dict

    from distillkit.data.synthetic import SyntheticSet
    from distillkit.run import seed_everything

    out, args = pop_path(args, "--out")
    paths = [a for a in args if "=" not in a]
    if len(paths) != 1:
        raise UserError("usage: distillkit eval PATH [overrides] [--out DIR]")
    path = Path(paths[0])
    if path.is_dir():  # a run's directory: its distilled set
        path = path / "distilled.safetensors"
    distilled = SyntheticSet.load(path)
    overrides = [a for a in args if "=" in a]
    user_keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    stored = distilled.meta.get("dataset", {})
    implied = [f"dataset={stored['name']}"] if "dataset" not in user_keys and stored.get("name") else []
    if "ipc" not in user_keys and distilled.meta.get("ipc"):
        implied.append(f"ipc={distilled.meta['ipc']}")
    cfg = compose_config(implied + overrides + ["tracker=none"])
    if implied[:1]:  # evaluate against the very images the set was made from, unless told otherwise
        with open_dict(cfg):
            for key, value in stored.items():
                if f"dataset.{key}" not in user_keys:
                    cfg.dataset[key] = value
    the_plan = check_composed(cfg)
    seed_everything(int(cfg.seed))
    out = out or path.parent
    with logging_to(out / "eval.log"):
        return evaluate_set(distilled, path, cfg, the_plan, out)


def evaluate_set(distilled, path: Path, cfg, the_plan, out: Path) -> int:
    """``eval``'s work once the set and its config are known: the evaluator, eval_results.json, the final lines."""
    from omegaconf import OmegaConf

    from distillkit.io import write_json
    from distillkit.ledger import cost, cost_line
    from distillkit.results import result_line, results
    from distillkit.run import check, make_context
    from distillkit.schedules import Artefacts

    ctx = make_context(cfg, out, the_plan.roles, the_plan.tracker)
    if tuple(distilled.images.shape[1:]) != (ctx.data.channels, *ctx.data.image_size):
        raise UserError(f"{path}: images are {tuple(distilled.images.shape[1:])} but dataset "
                        f"'{cfg.dataset.name}' has {(ctx.data.channels, *ctx.data.image_size)}; pass dataset=...")
    if int(distilled.labels.max()) >= ctx.data.num_classes or int(distilled.labels.min()) < 0:
        raise UserError(f"{path}: labels outside 0..{ctx.data.num_classes - 1} for dataset '{cfg.dataset.name}'")
    check(the_plan, ctx)
    artefacts = Artefacts(save_set=None)
    with artefacts.timed("evaluator"):
        report = the_plan.stages.evaluator(distilled, ctx)
    payload = results(method=distilled.meta.get("method", "external"), dataset=cfg.dataset.name,
                      ipc=distilled.meta.get("ipc", cfg.ipc), status="evaluated", report=report,
                      roles=ctx.roles.report, seconds=artefacts.seconds, device=ctx.device, source=str(path),
                      dataset_config=ctx.dataset_identity,
                      cost=cost(seconds=artefacts.seconds, forwards=ctx.roles.forwards, device=ctx.device,
                                set_file=path, images_generated=0),
                      test_set_readers=sorted(set(ctx.test_reads)),
                      evaluator=OmegaConf.to_container(cfg.evaluator, resolve=True))
    write_json(out / "eval_results.json", payload)
    print(result_line(payload, out / "eval_results.json"))
    print(cost_line(payload))
    return 0


def list_command(args: list[str]) -> int:
    from distillkit.config import BENCH_GROUPS, config_groups, group_file_description, group_options

    for group in [*config_groups(), *BENCH_GROUPS]:
        print(f"{group}:")
        for name in group_options(group):
            print(f"  {name:<24} {group_file_description(group, name)}")
    return 0


def bench_command(args: list[str]) -> int:
    from distillkit.bench import run_bench

    out, args = pop_path(args, "--out")
    thresholds, args = pop_path(args, "--check")
    only = []
    while "--only" in args:
        value, args = pop_option(args, "--only")
        only.append(value)
    rest = [a for a in args if a != "--dry-run"]
    names = [a for a in rest if "=" not in a]
    if len(names) != 1:
        raise UserError("usage: distillkit bench SUITE [overrides] [--out DIR] [--check THRESHOLDS] "
                        "[--only KEY=V[,V]] [--dry-run]")
    return run_bench(names[0], [a for a in rest if "=" in a], out, thresholds, dry_run="--dry-run" in args,
                     only=only)


def report_command(args: list[str]) -> int:
    from distillkit.report import refresh_document, report_runs, split_options

    doc, args = pop_path(args, "--into")
    if doc is not None:
        check = "--check" in args
        if [a for a in args if a != "--check"]:
            raise UserError("usage: distillkit report --into DOC.md [--check]")
        return refresh_document(doc, check)
    out, args = pop_path(args, "--out")
    paths, options = split_options(args)
    if not paths:
        raise UserError("usage: distillkit report RUN_DIR... [--out DIR] [--seed-key KEY] [--columns KEY[,KEY]] | "
                        "--into DOC.md [--check]")
    return report_runs([Path(a) for a in paths], out, options)


COMMANDS = {"run": run_command, "eval": eval_command, "bench": bench_command, "report": report_command,
            "list": list_command}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    os.environ.setdefault("HYDRA_FULL_ERROR", "0")
    try:
        if command not in COMMANDS:
            raise UserError(f"unknown command '{command}' (choose from: {', '.join(COMMANDS)})")
        return COMMANDS[command](rest)
    except UserError as err:
        print(f"distillkit: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("distillkit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
