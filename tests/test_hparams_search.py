"""conf/hparams_search: Hydra's Optuna sweeper tunes a method on its evaluator's primary metric, in the
direction the evaluator names (the default classifier's accuracy up, lower_is_better.py's error down)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from distillkit.config import group_options
from distillkit.results import objective
from support import TINY, compose

TESTS = Path(__file__).resolve().parent
ERROR_EVALUATOR = "lower_is_better.ErrorEvaluator"
# tiny trials: the search config's lr interval, 1 or 3 DM iterations instead of hundreds, enough evaluation
# epochs (smoke: 3) for accuracies above chance that differ between trials
TINY_SEARCH = ("hparams_search=dm_digits", "hydra.sweeper.n_trials=2", *TINY, "generator.iterations=choice(1, 3)",
               "evaluator.epochs=40")


def search(sweep_dir: Path, *overrides: str):
    """Run a tiny search; its optimization_results.yaml and every trial's primary metric."""
    env = {**os.environ, "DISTILLKIT_PROGRESS": "0",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", "distillkit", "run", "-m", *TINY_SEARCH, *overrides,
                          f"hydra.sweep.dir={sweep_dir}"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    trials = sorted(sweep_dir.glob("*_dm_digits_ipc10/results.json"))
    values = [objective(json.loads(path.read_text())) for path in trials]
    assert len(values) == 2 and len(set(values)) > 1, values  # trials that differ, or the direction is untested
    return OmegaConf.load(sweep_dir / "optimization_results.yaml"), values


@pytest.mark.parametrize("option", group_options("hparams_search"))
def test_every_search_composes_and_resolves(option):
    cfg = compose(f"hparams_search={option}", with_hydra=True)
    OmegaConf.to_container(compose(f"hparams_search={option}"), resolve=True)
    assert cfg.hydra.sweeper.direction in ("maximize", "minimize") and cfg.hydra.sweeper.params


def test_search_composes_and_its_direction_follows_the_evaluator():
    cfg = compose(*TINY, "hparams_search=dm_digits", with_hydra=True)
    assert cfg.method.name == "dm" and cfg.dataset.name == "digits"
    assert set(cfg.hydra.sweeper.params) == {"generator.lr_img", "generator.iterations"}
    assert cfg.hydra.sweeper.direction == "maximize"
    lower = compose(*TINY, "hparams_search=dm_digits", f"evaluator._target_={ERROR_EVALUATOR}", with_hydra=True)
    assert lower.hydra.sweeper.direction == "minimize"


def test_a_lower_is_better_metric_is_minimised(tmp_path):
    found, errors = search(tmp_path, f"evaluator._target_={ERROR_EVALUATOR}")
    assert found.direction == "minimize" and found.best_value == min(errors)


def test_accuracy_is_maximised_by_default(tmp_path):
    found, accuracies = search(tmp_path)
    assert found.direction == "maximize" and found.best_value == max(accuracies)


def test_the_precheck_covers_the_search_space():
    """Optuna's intervals and choices pass the pre-check, which checks their ends and the config's own space."""
    from distillkit.cli import sweep_jobs

    jobs = sweep_jobs(["hparams_search=dm_digits", "generator.iterations=choice(1, 3)"], multirun=True)
    assert sorted(" ".join(sorted(job)) for job in jobs) == sorted(
        f"generator.iterations={n} generator.lr_img={lr} hparams_search=dm_digits" for n in (1, 3) for lr in (0.1, 10.0))


BAD_SEARCHES = [("generator.lr_imgg=interval(0.1, 1)", "Key 'lr_imgg' is not in struct"),
                ("generator.lr_img=tag(log, interval(-1, 1))", "generator.lr_img: input should be greater than 0")]


@pytest.mark.parametrize("override,message", BAD_SEARCHES, ids=[o for o, _ in BAD_SEARCHES])
def test_a_bad_interval_is_one_line_before_any_trial(override, message, capsys):
    from distillkit.cli import main

    assert main(["run", "-m", "hparams_search=dm_digits", *TINY, override]) == 2
    assert message in capsys.readouterr().err
