"""Every config in conf/ composes and resolves; the top-level contract holds."""

from __future__ import annotations

import re

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


KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[\w.@/-]+):(?P<rest>.*)$")


def undocumented_keys(text: str) -> list[str]:
    """Key lines of a YAML file that no comment explains.

    The rule: a key is documented when its line carries a ``# comment``, or the line just above it is a
    comment line (not the file's ``@package`` line or its description, the first comment line, which
    describes the whole file), or it opens a mapping (nothing after the colon) all of whose keys are
    documented. ``defaults`` (Hydra's list of other files) and ``_target_`` (the class, which the
    description explains) need none.
    """
    lines = text.splitlines()
    header = {i for i, line in enumerate(lines[:2]) if line.startswith("#")}
    if len(header) == 2 and "@package" not in lines[0]:
        header = {0}
    keys = []  # (line number, indent, key, has its own comment or one just above, opens a mapping)
    for i, line in enumerate(lines):
        match = KEY_LINE.match(line)
        if not match or match["key"] in ("defaults", "_target_"):
            continue
        rest = match["rest"]
        inline = bool(re.search(r"(^|\s)#", rest))
        above = i > 0 and i - 1 not in header and lines[i - 1].lstrip().startswith("#")
        opens = rest.split("#")[0].strip() == ""
        keys.append((i, len(match["indent"]), match["key"], inline or above, opens))

    def documented(k: int) -> bool:
        i, indent, _, commented, opens = keys[k]
        if commented:
            return True
        children = []
        for j in range(k + 1, len(keys)):
            if keys[j][1] <= indent:
                break
            if keys[j][1] == min(c[1] for c in keys[k + 1:j + 1] if c[1] > indent):
                children.append(j)
        return opens and bool(children) and all(documented(j) for j in children)

    return [f"{keys[k][0] + 1}: {keys[k][2]}" for k in range(len(keys)) if not documented(k)]


COMMENTED_FILES = sorted(p for p in config_dir().rglob("*.yaml")
                         if p.relative_to(config_dir()).parts[0] not in ("hydra", "experiment"))


@pytest.mark.parametrize("path", COMMENTED_FILES, ids=[str(p.relative_to(config_dir())) for p in COMMENTED_FILES])
def test_every_config_key_has_a_comment(path):
    missing = undocumented_keys(path.read_text())
    assert not missing, f"{path.relative_to(config_dir())}: keys without a comment (lines {', '.join(missing)})"
