"""Where the Hydra config lives, its groups (the one list ``distillkit list``, ``--help`` and the tests
read), single group files by name, the resolvers configs may use, and composing the config for a list of
overrides with Hydra's errors as one line (``compose_config``: the CLI, ``distillkit bench``, scripts, tests)."""

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


def compose_config(overrides: list[str], with_hydra: bool = False):
    """The composed config for ``overrides`` (``with_hydra``: and its ``hydra`` node), with Hydra's errors
    turned into one-line UserErrors."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException, ValidationError

    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3", job_name="distillkit"):
            return compose("config", overrides=overrides, return_hydra_config=with_hydra)
    except MissingConfigException as err:
        missing = (err.missing_cfg_file or "").strip("/")
        group, _, name = missing.rpartition("/")
        if group:
            raise UserError(f"unknown {group} '{name}' (choose from: {', '.join(group_options(group))})") from None
        raise UserError(str(err).splitlines()[0]) from None
    except (ConfigCompositionException, OverrideParseException, OmegaConfBaseException) as err:
        invalid = err.__cause__ if isinstance(err.__cause__, ValidationError) else err
        if isinstance(invalid, ValidationError) and getattr(invalid, "full_key", None):
            # a value of the wrong type for a typed key (Hydra's own nodes, e.g. hydra.launcher.timeout_min)
            raise UserError(f"{invalid.full_key}: {str(invalid.msg).splitlines()[0]}") from None
        raise UserError(one_line(err)) from None


def one_line(err: Exception) -> str:
    """Hydra's and OmegaConf's multi-line messages, and their causes, as one line."""
    parts = []
    for e in (err, err.__cause__):
        if e is not None:
            parts += [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.strip().startswith(
                ("full_key:", "object_type=", "reference_type=", "To append"))]
    text = " ".join(dict.fromkeys(parts)) or type(err).__name__
    if "not in struct" in text:
        text += " (check the spelling; '+key=value' adds a new key; 'distillkit run --cfg job' shows the keys)"
    return text
