"""Fail fast: a bad value for any numeric key of any config group is one line naming the full key,
exit code 2, and nothing runs.

The cases are discovered, not listed: every option file of every folder of ``conf/`` (each config
group, where ``conf/config.yaml``'s defaults list places it: ``role@roles.teacher``,
``model@roles.teacher.model``…; models also inside ``evaluator.models``) is read, and each of its
keys whose value is a number (nested ones included; and ``null`` / ``auto`` keys whose annotation
takes a number) gets

* ``abc``, which every numeric key must refuse, and
* a value just outside each bound its constructor's annotation declares (``Ge`` / ``Gt`` / ``Le`` /
  ``Lt`` from the pydantic-annotated signature, read with ``inspect.signature``; the dataset's and
  the top-level keys from their schemas ``DatasetSettings`` / ``RunSettings``).

A budget key is read through an interpolation (``epochs: ${budget.eval_epochs}``): its cases run
with a method whose composed config interpolates it, and the error must name the consuming key and
say ``(set by budget.<key>)``.

The bulk runs in process through ``distillkit.cli.main`` with ``distillkit.run.execute`` and the Hydra
app replaced by tripwires; Hydra's composition (0.3 s) is done once per option, the bad value then
applied to a copy the way Hydra applies a value override. The reviewer's cases go through the real
composition, and a few run end to end as ``python -m distillkit run``.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import os
import re
import subprocess
import sys
import types
import typing
from dataclasses import dataclass
from functools import cache

import annotated_types
import pytest
from omegaconf import DictConfig, OmegaConf
from pydantic.fields import FieldInfo

import distillkit.app
import distillkit.cli as cli
import distillkit.run
from distillkit.config import config_dir, config_groups, group_options
from distillkit.data.datasets import LOADER_SETTINGS, DatasetSettings
from distillkit.models import create_model, model_class
from distillkit.run import RunSettings

BAD_TYPE = "abc"
# Keys that take any number of their type: they get only the type check. Every other numeric key
# must declare its range in its annotation (test_numeric_keys_without_a_range_are_meant_to_be).
ANY_NUMBER = re.compile(r"(^|\.)(seed|split_seed|build_seed|label_epoch)$"  # seeds; label_epoch counts from the end when < 0
                        r"|^dataset\.mean$"                        # a channel mean may be any number
                        r"|\.class_map\."                          # class -> a pipeline's label, any int it knows
                        r"|^dataset\.imagenet_labels\."             # class folder -> its ImageNet-1k label
                        r"|^hydra\.launcher\.")                    # typed by Hydra's submitit schema, not by distillkit


# ---------------------------------------------------------------------------------------------
# What the config holds
# ---------------------------------------------------------------------------------------------

def load(group: str, option: str) -> tuple[dict, bool]:
    """An option file's keys (its defaults list left out) and whether it is ``@package _global_``."""
    path = config_dir() / group / f"{option}.yaml" if group else config_dir() / "config.yaml"
    content = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    content.pop("defaults", None)
    return content, bool(re.search(r"^# @package _global_", path.read_text(), re.M))


def leaves(node: dict, prefix: str = ""):
    """(dotted key, value) for every value that is not a non-empty mapping; lists are values."""
    for key, value in node.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, f"{prefix}{key}.")
        elif key != "_target_":
            yield f"{prefix}{key}", value


@cache
def defaults() -> list[tuple[str, str | None, str | None]]:
    """(group, package, option) of every entry of conf/config.yaml's defaults list."""
    entries = []
    for entry in OmegaConf.to_container(OmegaConf.load(config_dir() / "config.yaml"))["defaults"]:
        if isinstance(entry, dict):
            (name, option), = entry.items()
            group, _, package = re.sub(r"^(optional|override) ", "", name).partition("@")
            entries.append((group, package or None, option))
    return entries


def placements(group: str, option: str) -> list[tuple[tuple[str, ...], str]]:
    """Where an option's keys land: (the overrides that select it, the package) for each place."""
    content, is_global = load(group, option)
    spots = [(package, default) for g, package, default in defaults() if g == group and package]
    if is_global or not spots:
        default = next((d for g, p, d in defaults() if g == group and not p), None)
        base = () if option == default else (f"{group}={option}",)
        return [(base, "" if is_global else group.replace("/", "."))]
    mine = [(p, d) for p, d in spots if d == option] or spots  # a role where it is the default
    return [(() if d == option else (f"{group}@{p}={option}",), p) for p, d in mine]


# ---------------------------------------------------------------------------------------------
# What the annotations declare
# ---------------------------------------------------------------------------------------------

def union_members(annotation) -> list:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in union_members(a)]
    return [annotation]


def strip(annotation) -> tuple[object, list]:
    """(the type, its Annotated metadata with pydantic Field constraints unpacked)."""
    metadata = []
    if typing.get_origin(annotation) is typing.Annotated:
        annotation, *metadata = typing.get_args(annotation)
    unpacked = [m for meta in metadata for m in (meta.metadata if isinstance(meta, FieldInfo) else [meta])]
    return annotation, unpacked


def signature(node) -> inspect.Signature:
    """The annotated signature of the constructor a config node with a ``_target_`` calls."""
    from hydra.utils import get_object

    target = get_object(node["_target_"])
    if target is create_model:
        target = model_class(node["name"])
    return inspect.signature(target.__init__ if isinstance(target, type) else target, eval_str=True)


def descend(annotation, part: str):
    """The annotation of ``part`` inside a value annotated ``annotation`` (dataclass field, dict value,
    list element); None when it has none."""
    for member in union_members(annotation):
        base, _ = strip(member)
        if dataclasses.is_dataclass(base):
            hints = typing.get_type_hints(base, include_extras=True)
            if part in hints:
                return hints[part]
        elif typing.get_origin(base) is dict:
            return typing.get_args(base)[1]
        elif typing.get_origin(base) in (list, tuple) and part.isdigit():
            return typing.get_args(base)[0]
    return None


def annotation_at(cfg: DictConfig, key: str):
    """The annotation that types ``key`` of the composed ``cfg``: a field of the dataset or top-level
    schema, or a parameter of the constructor of the deepest node above it with a ``_target_``."""
    parts = key.split(".")
    if parts[0] == "dataset":
        loader_schema = LOADER_SETTINGS.get(cfg.dataset.get("loader"), (None,))[0]
        own = loader_schema is not None and parts[1] in loader_schema.__dataclass_fields__
        annotation, parts = (loader_schema if own else DatasetSettings), parts[1:]
    elif parts[0] in RunSettings.__dataclass_fields__:
        annotation = RunSettings
    else:
        for i in range(len(parts) - 1, 0, -1):
            node = OmegaConf.select(cfg, ".".join(parts[:i]))
            if isinstance(node, DictConfig) and "_target_" in node:
                parameter = signature(node).parameters.get(parts[i])
                annotation, parts = (parameter.annotation if parameter else None), parts[i + 1:]
                break
        else:
            return None
    for part in parts:
        annotation = annotation and descend(annotation, part)
    return annotation


def number_type(annotation) -> tuple[type, list] | None:
    """(int or float, the bounds declared on it) when ``annotation`` takes a number (or a list of them)."""
    for member in union_members(annotation):
        base, metadata = strip(member)
        if typing.get_origin(base) in (list, tuple):
            return number_type(typing.get_args(base)[0])
        if base in (int, float):
            return base, [m for m in metadata if isinstance(m, (annotated_types.Ge, annotated_types.Gt,
                                                                   annotated_types.Le, annotated_types.Lt))]
    return None


def is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def outside(kind: type, bound) -> tuple[object, str]:
    """A value just outside ``bound`` for a ``kind`` key, and the word pydantic's message uses."""
    step = 1 if kind is int else 0.5
    if isinstance(bound, annotated_types.Ge):
        return kind(bound.ge) - step, "greater than or equal"
    if isinstance(bound, annotated_types.Gt):
        return kind(bound.gt), "greater than"
    if isinstance(bound, annotated_types.Le):
        return kind(bound.le) + step, "less than or equal"
    return kind(bound.lt), "less than"


def hydra_value(value) -> str:
    """``value`` as an override writes it."""
    if isinstance(value, str):
        return value if value == BAD_TYPE else f"'{value}'"
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{hydra_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


# ---------------------------------------------------------------------------------------------
# Composition, once per option
# ---------------------------------------------------------------------------------------------

class Composer:
    """``compose_config`` that composes all but the last override once and applies the last one — a
    config value — to a copy, with the step Hydra itself applies value overrides with
    (``ConfigLoaderImpl._apply_overrides_to_config``). Group and ``hydra.`` overrides compose for real."""

    def __init__(self):
        self.real, self.bases = cli.compose_config, {}

    def base(self, overrides) -> DictConfig:
        key = tuple(overrides)
        if key not in self.bases:
            self.bases[key] = self.real(list(key))
        return self.bases[key]

    def __call__(self, overrides: list[str]) -> DictConfig:
        from hydra._internal.config_loader_impl import ConfigLoaderImpl
        from hydra.core.override_parser.overrides_parser import OverridesParser

        *base, last = overrides
        parsed = OverridesParser.create().parse_overrides([last])[0]
        key = parsed.key_or_group
        if parsed.is_hydra_override() or parsed.package is not None or key in config_groups():
            return self.real(overrides)
        cfg = copy.deepcopy(self.base(base))
        ConfigLoaderImpl._apply_overrides_to_config([parsed], cfg)
        return cfg


COMPOSER = Composer()


# ---------------------------------------------------------------------------------------------
# The cases
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    group: str                 # the config group the key belongs to ("" = conf/config.yaml)
    base: tuple[str, ...]      # the overrides that select the option (or the method or evaluator, for a budget key)
    key: str                   # the key given the bad value
    value: object
    names: frozenset[str]      # the keys the error may name (a list's first item; a budget key's consumers)
    expect: str                # a word the message must hold ('abc', or the bound's wording)
    origin: str | None = None  # budget.x, for a value the config interpolates

    @property
    def override(self) -> str:
        return f"{self.key}={hydra_value(self.value)}"

    @property
    def argv(self) -> list[str]:
        return ["run", *self.base, self.override]

    def __str__(self) -> str:
        return " ".join(self.argv[1:])


@dataclass
class Key:
    """A numeric key found in an option file."""

    group: str
    base: tuple[str, ...]
    key: str
    kind: type                 # int or float
    bounds: list               # the Ge / Gt / Le / Lt its annotation declares (none without an annotation)
    is_list: bool
    option: dict | None = None  # a model option's whole config (the evaluator.models cases write it out)


def cases_for(found: Key, base=None, names=None, origin=None, key=None, wrap=None) -> list[Case]:
    key = key or found.key
    names = names or frozenset({f"{found.key}.0" if found.is_list else found.key})
    wrap = wrap or (lambda v: [v] if found.is_list else v)
    base = found.base if base is None else base
    cases = [Case(found.group, base, key, wrap(BAD_TYPE), names, f"'{BAD_TYPE}'", origin)]
    for bound in found.bounds:
        value, words = outside(found.kind, bound)
        cases.append(Case(found.group, base, key, wrap(value), names, words, origin))
    return cases


def classify(group: str, base: tuple[str, ...], key: str, value, annotation) -> Key | None:
    """A Key when ``key`` (with ``value`` as composed) is numeric; None otherwise."""
    typed = number_type(annotation) if annotation is not None else None
    is_list = isinstance(value, (list, tuple)) or (
        annotation is not None and any(typing.get_origin(strip(m)[0]) in (list, tuple) for m in union_members(annotation)))
    if typed:
        return Key(group, base, key, typed[0], typed[1], is_list)
    numbers = value if isinstance(value, (list, tuple)) else [value]
    if numbers and all(is_number(v) for v in numbers):
        return Key(group, base, key, type(numbers[0]), [], is_list)
    return None


def groups_in_order() -> list[str]:
    """conf/config.yaml, then the groups, the global ones (method, experiment) last, so that a key they
    set is counted in the group that holds it; budget keys are found through their consumers."""
    groups = [g for g in config_groups() if g != "budget"]
    return ["", *sorted(groups, key=lambda g: any(load(g, o)[1] for o in group_options(g)))]


def options_in_order(group: str) -> list[str]:
    if not group:
        return ["config"]
    default = [d for g, p, d in defaults() if g == group]
    return sorted(group_options(group), key=lambda o: o not in default)


@cache
def numeric_keys() -> tuple[list[Key], dict[str, set[str]]]:
    """Every numeric key, once (where it is first met), and every group each key appears in."""
    seen, found, groups_of = set(), [], {}
    for group in groups_in_order():
        for option in options_in_order(group):
            content = load(group, option)[0] if group else load("", "")[0]
            if group == "model":  # a model config: at its placements and as an evaluator model
                for base, package in [*placements(group, option), ((), "evaluator.models.0")]:
                    for key, value in leaves(content):
                        full = f"{package}.{key}"
                        groups_of.setdefault(full, set()).add(group)
                        parameter = inspect.signature(model_class(content["name"]).__init__,
                                                      eval_str=True).parameters.get(key)
                        if full not in seen:
                            seen.add(full)
                            numeric = classify(group, base, full, value, parameter and parameter.annotation)
                            if numeric:
                                found.append(dataclasses.replace(numeric, option=content))
                continue
            for base, package in placements(group, option) if group else [((), "")]:
                for key, value in leaves(content):
                    full = f"{package}.{key}" if package else key
                    if full.startswith("hydra.") and group != "hydra/launcher":
                        continue  # conf/config.yaml's hydra: section (run dirs, chdir): Hydra's own settings
                    groups_of.setdefault(full, set()).add(group)
                    if full in seen:
                        continue
                    seen.add(full)
                    if full.startswith("hydra."):
                        numeric = classify(group, base, full, value, None)
                    else:
                        cfg = COMPOSER.base(base)
                        numeric = classify(group, base, full, OmegaConf.select(cfg, full), annotation_at(cfg, full))
                    if numeric:
                        found.append(numeric)
    return found, groups_of


def budget_mentions(base: tuple[str, ...], default_method: str) -> set[str]:
    """Budget keys the file ``base`` picks (a method's or an evaluator's; ``()``: the default method), or a
    file its defaults list picks, interpolates (a cheap guess of what to compose; the composed config decides)."""
    group, option = base[0].split("=") if base else ("method", default_method)
    path = config_dir() / group / f"{option}.yaml"
    texts = [path.read_text()]
    for entry in OmegaConf.to_container(OmegaConf.load(path)).get("defaults", []):
        if isinstance(entry, dict):
            (name, option), = entry.items()
            group = re.sub(r"^(override )?/", "", name).split("@")[0]
            if (config_dir() / group / f"{option}.yaml").is_file():
                texts.append((config_dir() / group / f"{option}.yaml").read_text())
    return set(re.findall(r"\$\{budget\.(\w+)\}", "\n".join(texts)))


def consumers(cfg: DictConfig, budget_key: str) -> set[str]:
    """The keys of ``cfg`` whose value is exactly ``${budget.<budget_key>}``."""
    return {key for key, value in leaves(OmegaConf.to_container(cfg, resolve=False))
            if value == f"${{budget.{budget_key}}}"}


@cache
def budget_keys() -> list[tuple[str, tuple[str, ...], set[str], Key]]:
    """(budget key, a method or evaluator base that reads it, its consumers there, the consumers' number type)."""
    values = {}
    for option in group_options("budget"):
        for key, value in leaves(load("budget", option)[0]):
            values.setdefault(key, []).append(value)
    default_method = next(d for g, p, d in defaults() if g == "method")
    default_evaluator = next(d for g, p, d in defaults() if g == "evaluator")
    # every method (with the default evaluator), then every other evaluator (with the default method)
    candidates = [(), *[(f"method={m}",) for m in sorted(set(group_options("method")) - {default_method})],
                  *[(f"evaluator={e}",) for e in sorted(set(group_options("evaluator")) - {default_evaluator})]]
    found = []
    for key, seen in values.items():
        if not all(is_number(v) or v is None for v in seen):
            continue  # a name, a description, a switch
        bases = sorted(candidates, key=lambda b: (b != (), key not in budget_mentions(b, default_method)))
        for base in bases:
            cfg = COMPOSER.base(base)
            readers = consumers(cfg, key)
            if readers:
                annotations = [annotation_at(cfg, r) for r in sorted(readers)]
                typed = [number_type(a) for a in annotations if a is not None and number_type(a)]
                if typed or any(is_number(v) for v in seen):
                    kind = typed[0][0] if typed else type(next(v for v in seen if is_number(v)))
                    bounds = list({repr(b): b for t in typed for b in t[1]}.values())
                    found.append((key, base, readers, Key("budget", base, f"budget.{key}", kind, bounds, False)))
                break
        else:
            if any(is_number(v) for v in seen):
                found.append((key, (), set(), None))  # read by no method: test_every_budget_key_is_read
    return found


@cache
def all_cases() -> list[Case]:
    keys, _ = numeric_keys()
    cases = []
    for found in keys:
        if found.group == "model" and found.key.startswith("evaluator.models."):
            leaf = found.key.removeprefix("evaluator.models.0.")
            option = found.option
            cases += cases_for(found, key="evaluator.models",
                               wrap=lambda v, leaf=leaf, option=option: [{**option, leaf: v}])
        else:
            cases += cases_for(found)
    for key, base, readers, found in budget_keys():
        if found is not None:
            cases += cases_for(found, base=base, names=frozenset(readers), origin=f"budget.{key}")
    return cases


# ---------------------------------------------------------------------------------------------
# Running them
# ---------------------------------------------------------------------------------------------

class StageRan(Exception):
    """Raised by the tripwires in place of the Hydra app and distillkit.run.execute."""


@pytest.fixture
def nothing_runs(monkeypatch):
    def tripwire(*args, **kwargs):
        raise StageRan("the run went past the checks")

    monkeypatch.setattr(distillkit.run, "execute", tripwire)
    monkeypatch.setattr(distillkit.app, "hydra_app", tripwire)


def problem(case: Case, code, err: str) -> str | None:
    """What is wrong with the outcome of ``case`` (None: one right line and exit code 2)."""
    lines = err.strip().splitlines()
    if code != 2 or len(lines) != 1:
        return f"{case}: exit {code}, stderr {err.strip()!r}"
    line = lines[0]
    named = re.match(r"distillkit: error: (\S+): ", line)
    if not named or named.group(1) not in case.names:
        return f"{case}: the line does not name {' or '.join(sorted(case.names))}: {line!r}"
    if case.expect not in line:
        return f"{case}: the line does not say {case.expect!r}: {line!r}"
    if case.origin and not line.endswith(f"(set by {case.origin})"):
        return f"{case}: the line does not end with '(set by {case.origin})': {line!r}"
    return None


def run_in_process(case: Case, capsys) -> str | None:
    capsys.readouterr()
    try:
        code = cli.main(case.argv)
    except StageRan:
        return f"{case}: not caught — the run would have started"
    return problem(case, code, capsys.readouterr().err)


GROUPS = ["", *config_groups()]


@pytest.mark.parametrize("group", GROUPS, ids=[g or "config.yaml" for g in GROUPS])
def test_every_numeric_key_refuses_bad_values_before_anything_runs(group, capsys, monkeypatch, nothing_runs):
    monkeypatch.setattr(cli, "compose_config", COMPOSER)
    cases = [c for c in all_cases() if c.group == group]
    problems = [p for p in (run_in_process(c, capsys) for c in cases) if p]
    assert not problems, f"{len(problems)} of {len(cases)} cases:\n" + "\n".join(problems)


def test_every_group_with_numeric_keys_has_cases():
    keys, groups_of = numeric_keys()
    covered = {g for k in keys for g in groups_of[k.key]}
    covered |= {"budget"} if any(c.group == "budget" for c in all_cases()) else set()
    # hydra.* keys outside hydra/launcher (the Optuna sweeper's in hparams_search) are typed by Hydra's plugins
    with_numbers = {g for g in GROUPS for o in options_in_order(g)
                    if any(is_number(v) or (isinstance(v, list) and v and all(map(is_number, v)))
                           for k, v in leaves(load(g, o)[0] if g else load("", "")[0])
                           if g == "hydra/launcher" or not k.startswith("hydra."))}
    assert with_numbers <= covered, with_numbers - covered
    count = len(all_cases())
    print(f"\n{len({c.key for c in all_cases()})} keys, {count} bad values")
    assert count > 250


def test_every_budget_key_is_read_by_some_method():
    unread = [key for key, _, readers, _ in budget_keys() if not readers]
    assert not unread, f"budget keys no method or evaluator reads: {unread}"


def test_numeric_keys_without_a_range_are_meant_to_be():
    """A numeric key whose annotation declares no bound takes any number: that must be on purpose."""
    keys, _ = numeric_keys()
    loose = [k.key for k in keys if not k.bounds and not ANY_NUMBER.search(k.key)]
    loose += [f"budget.{key}" for key, _, _, found in budget_keys() if found and not found.bounds]
    assert not loose, f"declare a range in the constructor's annotation (or list them in ANY_NUMBER): {loose}"


def test_annotations_are_read_from_the_validated_signatures():
    """The discovery reads real bounds: a few spot checks of what it derives."""
    cases = {(c.key, str(c.value)) for c in all_cases()}
    for key, value in [("evaluator.epochs", "0"), ("evaluator.lr", "0.0"), ("dataset.train_per_class", "0"),
                       ("roles.experts.shard.count", "0"), ("roles.diffusion.train.ema_decay", "1.5"),
                       ("generator.selection_ratio", "1.0"), ("sampler.init_ratio", "0.0"),
                       ("roles.teacher.model.width", "0"), ("dataset.std", "[0.0]"), ("ipc", "0"),
                       ("budget.eval_epochs", "0"), ("generator.max_real_per_pass", "0")]:
        assert (key, value) in cases, (key, value)
    assert ("seed", "abc") in cases and not [c for c in all_cases() if c.key in ("seed", "generator.label_epoch")
                                             and c.value != BAD_TYPE]


# The reviewer's cases, through the real composition.
REVIEWED = [
    (["evaluator.epochs=-1"], "evaluator.epochs: input should be greater than or equal to 1 (got -1)"),
    (["evaluator.num_seeds=0"], "evaluator.num_seeds: input should be greater than or equal to 1 (got 0)"),
    (["evaluator.models=[nope]"], "evaluator.models.0: unknown model 'nope' (choose from: alexnet, convnet"),
    (["evaluator.lr=-1"], "evaluator.lr: input should be greater than 0 (got -1)"),
    (["evaluator.precision=fp16"], "evaluator.precision: input should be 'fp32' or 'bf16' (got 'fp16')"),
    (["evaluator.epochs=abc"], "evaluator.epochs: input should be a valid integer, unable to parse string as an "
                               "integer (got 'abc')"),
    (["dataset.train_per_class=0"], "dataset.train_per_class: input should be greater than or equal to 1 (got 0)"),
    (["budget.eval_epochs=0"], "evaluator.epochs: input should be greater than or equal to 1 (got 0) "
                               "(set by budget.eval_epochs)"),
    (["method=full", "budget.full_epochs=abc"], "evaluator.epochs: input should be a valid integer, unable to parse "
                                                "string as an integer (got 'abc') (set by budget.full_epochs)"),
    (["roles.teacher.model.depth=0"], "roles.teacher.model.depth: input should be greater than or equal to 1 (got 0)"),
    (["hydra/launcher=local", "hydra.launcher.timeout_min=abc"],
     "hydra.launcher.timeout_min: Value 'abc' of type 'str' could not be converted to Integer"),
]


@pytest.mark.parametrize("args,message", REVIEWED, ids=[" ".join(a) for a, _ in REVIEWED])
def test_reviewed_cases_through_the_real_composition(args, message, capsys, nothing_runs):
    assert cli.main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"distillkit: error: {message}") and len(err.strip().splitlines()) == 1, err


# (arguments, how the line starts); the sweep's second job is the bad one: every job is checked first
END_TO_END = [
    (["evaluator.epochs=-1"], "evaluator.epochs: input should be greater than or equal to 1 (got -1)"),
    (["method=mtt", "budget.tm_syn_steps=abc"], "generator.syn_steps: input should be a valid integer"),
    (["-m", "dataset.train_per_class=5,0"], "dataset.train_per_class: input should be greater than or equal to 1"),
]


def test_end_to_end_one_line_exit_2_and_no_run_directory(tmp_path):
    """``python -m distillkit run <bad>``: exit 2, one line on stderr, no traceback, nothing written."""
    env = {**os.environ, "DISTILLKIT_PROGRESS": "0"}
    runs = []
    for i, (args, _) in enumerate(END_TO_END):  # started together: most of each is importing torch
        out = tmp_path / str(i)
        command = [sys.executable, "-m", "distillkit", "run", *args, f"hydra.run.dir={out}/run",
                   f"hydra.sweep.dir={out}/sweep"]
        runs.append((args, out, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                 env=env, cwd=tmp_path)))
    for (args, out, process), (_, start) in zip(runs, END_TO_END):
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 2, (args, stderr)
        assert "Traceback" not in stdout + stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"distillkit: error: {start}"), (args, stderr)
        assert "budget." not in " ".join(args) or lines[0].endswith("(set by budget.tm_syn_steps)"), lines
        assert not out.exists() or not any(out.rglob("*")), (args, list(out.rglob("*")))
