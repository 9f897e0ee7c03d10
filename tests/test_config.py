"""Every config in conf/ composes and resolves; the top-level contract holds."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from distillkit.config import config_dir, config_groups, group_options
from support import compose

# groups whose options are chosen with `group=option`; the others are placed with `group@key=option`
# (model, role), are overlays (experiment, hparams_search) or are Hydra's (hydra/launcher)
GROUPS = [g for g in config_groups() if g not in ("model", "role", "experiment", "hparams_search", "hydra/launcher")]
CASES = [(g, o) for g in GROUPS for o in group_options(g)]


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_group_option_composes_and_resolves(group, option):
    cfg = compose(f"{group}={option}")
    OmegaConf.to_container(cfg, resolve=True)
    assert cfg.ipc == 10 and cfg.device == "auto"


def test_the_chosen_groups_are_every_stage_group():
    assert set(GROUPS) == {"method", "dataset", "budget", "schedule", "generator", "scorer", "sampler", "learner",
                           "evaluator", "tracker"}


@pytest.mark.parametrize("option", group_options("model"))
def test_model_option_composes_as_teacher(option):
    cfg = compose(f"model@roles.teacher.model={option}")
    assert cfg.roles.teacher.model.name


@pytest.mark.parametrize("option", group_options("experiment"))
def test_experiment_composes(option):
    OmegaConf.to_container(compose(f"experiment={option}"), resolve=True)


@pytest.mark.parametrize("option", group_options("hydra/launcher"))
def test_launcher_composes(option):
    from hydra import compose as hydra_compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = hydra_compose("config", overrides=[f"hydra/launcher={option}"], return_hydra_config=True)
    assert "submitit" in cfg.hydra.launcher._target_


def test_every_config_file_has_a_description():
    from distillkit.config import group_file_description

    for folder in config_dir().rglob("*"):
        if folder.is_dir() and list(folder.glob("*.yaml")):
            group = str(folder.relative_to(config_dir()))
            for name in group_options(group):
                assert group_file_description(group, name), f"{group}/{name}.yaml has no description line"


def test_defaults_are_the_documented_ones():
    cfg = compose()
    assert (cfg.dataset.name, cfg.ipc, cfg.budget.name) == ("digits", 10, "cpu")
    assert cfg.evaluator.models == ["convnet"] and cfg.evaluator.epochs == 300
