"""Where the Hydra config lives, its groups (the one list ``distillkit list``, ``--help`` and the tests
read), single group files by name, and the resolvers configs may use."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from distillkit.errors import UserError


@lru_cache(maxsize=1)
def config_dir() -> Path:
    """``distillkit/conf`` inside an installed wheel, ``conf/`` beside the package in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise UserError(f"distillkit's config folder is missing (looked in {here / 'conf'} and {here.parent / 'conf'})")


# groups a user picks from; the rest of conf/ (hydra/help) is plumbing
HIDDEN_GROUPS = ("hydra/help",)
# `distillkit bench`'s suites and thresholds: files of conf/, not options of a run's config
BENCH_GROUPS = ("bench", "bench/thresholds")


def config_groups() -> list[str]:
    """Every config group of a run's config: each folder of ``conf/`` that holds options, ``hydra/launcher``
    included (not ``distillkit bench``'s suites)."""
    root = config_dir()
    groups = sorted(str(folder.relative_to(root)) for folder in root.rglob("*")
                    if folder.is_dir() and any(folder.glob("*.yaml")))
    return [g for g in groups if g not in HIDDEN_GROUPS + BENCH_GROUPS]


def group_options(group: str) -> list[str]:
    folder = config_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def group_file_description(group: str, name: str) -> str:
    """The first comment line of a group file that is not a ``@package`` directive."""
    for line in (config_dir() / group / f"{name}.yaml").read_text().splitlines():
        text = line.lstrip("# ").strip()
        if line.startswith("#") and not text.startswith("@package") and text:
            return text
    return ""


def model_config(model) -> DictConfig:
    """A model config from a config node, or from ``conf/model/<name>.yaml`` when given a name."""
    if isinstance(model, (DictConfig, dict)):
        return OmegaConf.create(model) if isinstance(model, dict) else model
    if str(model) not in group_options("model"):
        raise UserError(f"unknown model '{model}' (choose from: {', '.join(group_options('model'))})")
    return OmegaConf.create(_model_file(str(model)))


@lru_cache(maxsize=None)
def _model_file(name: str) -> dict:
    # read once per process: every stage naming a model checks it when the run is planned
    return OmegaConf.to_container(OmegaConf.load(config_dir() / "model" / f"{name}.yaml"))


def evaluator_direction(target: str) -> str:
    """``maximize`` / ``minimize`` for the evaluator class ``target`` (its primary metric's direction):
    ``${distillkit_direction:${evaluator._target_}}`` in a sweeper config."""
    from hydra.utils import get_class

    return get_class(target).direction()


OmegaConf.register_new_resolver("distillkit_direction", evaluator_direction, replace=True)
