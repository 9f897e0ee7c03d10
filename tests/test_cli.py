"""End to end: baselines write valid artefacts, eval reproduces a run, sweeps, errors, W&B offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from distillkit.data.synthetic import SyntheticSet
from distillkit.run import execute
from distillkit.validation import build
from support import TINY, compose, distillkit, tiny_context


def check_artefacts(run_dir: Path, method: str, ipc: int, per_class: int):
    results = json.loads((run_dir / "results.json").read_text())
    for key in ("method", "dataset", "ipc", "budget", "seed", "accuracy", "per_model", "seconds", "device", "config"):
        assert key in results
    assert results["method"] == method and results["ipc"] == ipc and results["budget"] == "smoke"
    acc = results["accuracy"]
    assert set(acc) == {"mean", "std", "runs"} and 0 <= acc["mean"] <= 100 and len(acc["runs"]) == 1
    distilled = SyntheticSet.load(run_dir / "distilled.safetensors")
    assert distilled.images.dtype.is_floating_point and distilled.labels.dtype.is_signed
    assert distilled.per_class_counts(10) == [per_class] * 10
    assert distilled.meta["dataset"]["name"] == "digits" and distilled.meta["ipc"] == ipc
    assert Image.open(run_dir / "grid.png").size[1] >= 10 * 8
    return results


@pytest.mark.parametrize("method", ["random", "herding", "kcenter"])
def test_baseline_smoke_run_writes_valid_artefacts(method, tmp_path):
    check_artefacts(tmp_path, method, 2, 2) if execute(compose(*TINY, f"method={method}", "ipc=2"), tmp_path) else None


def test_full_uses_every_training_image(tmp_path):
    check_artefacts(tmp_path, "full", 10, 30) if execute(compose(*TINY, "method=full"), tmp_path) else None


def test_herding_differs_from_random(tmp_path):
    execute(compose(*TINY, "method=random", "ipc=3"), tmp_path / "r")
    execute(compose(*TINY, "method=herding", "ipc=3"), tmp_path / "h")
    r, h = (SyntheticSet.load(tmp_path / d / "distilled.safetensors").images for d in ("r", "h"))
    assert not (r.shape == h.shape and (r == h).all())


def test_run_then_eval_reproduces_accuracy(tmp_path):
    run = distillkit("run", *TINY, "ipc=3", f"hydra.run.dir={tmp_path}")
    assert run.returncode == 0, run.stderr
    final, ledger = run.stdout.splitlines()[-2:]  # the final line, then the cost ledger's
    assert "accuracy" in final and str(tmp_path) in final and ledger.startswith("cost: ")
    ran = json.loads((tmp_path / "results.json").read_text())["accuracy"]["runs"]
    assert (tmp_path / ".hydra" / "config.yaml").is_file()
    again = distillkit("eval", str(tmp_path / "distilled.safetensors"), "budget=smoke", "--out", str(tmp_path / "e"),
                       env={"DISTILLKIT_PROGRESS": "log", "DISTILLKIT_PROGRESS_SECONDS": "0"})
    assert again.returncode == 0, again.stderr
    assert json.loads((tmp_path / "e" / "eval_results.json").read_text())["accuracy"]["runs"] == ran
    # eval is not a Hydra app: its progress still reaches stderr and a log file, as a run's does
    progress_lines = [line for line in again.stderr.splitlines() if "[distillkit][INFO] - eval " in line]
    assert progress_lines and "s left)" in progress_lines[0]
    assert progress_lines[0] in (tmp_path / "e" / "eval.log").read_text()


def test_multirun_writes_one_directory_per_job(tmp_path):
    out = distillkit("run", "-m", *TINY, "method=random", "ipc=1,2", f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    assert sorted(p.parent.name for p in tmp_path.glob("*/results.json")) == [
        "0_random_digits_ipc1", "1_random_digits_ipc2"]


BAD_RUNS = [
    (["ipc=0"], "ipc: input should be greater than or equal to 1 (got 0)"),
    (["ipc=abc"], "ipc: input should be a valid integer"),
    (["method=nope"], "unknown method 'nope'"),
    (["nonsense_key=1"], "Key 'nonsense_key' is not in struct"),
    (["ipc=1,2"], "add -m"),
    (["dataset=cifar10", "dataset.download=false", "dataset.download_root=/nonexistent"], "not found under"),
    (["evaluator.labels=bad"], "evaluator.labels"),
]


@pytest.mark.parametrize("args,message", BAD_RUNS, ids=[" ".join(a) for a, _ in BAD_RUNS])
def test_bad_input_is_one_line_and_non_zero(args, message, tmp_path):
    out = distillkit("run", *TINY, *args, f"hydra.run.dir={tmp_path}")
    assert out.returncode != 0
    assert "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("distillkit: error:") and message in lines[-1]


def test_eval_refuses_corrupt_and_foreign_files(tmp_path):
    (tmp_path / "distilled.safetensors").write_bytes(b"\x00" * 64)
    out = distillkit("eval", str(tmp_path / "distilled.safetensors"))
    assert out.returncode == 2 and "Traceback" not in out.stderr and "not a readable safetensors" in out.stderr


def test_list_and_help_describe_the_groups():
    listed = distillkit("list")
    assert listed.returncode == 0 and "random " in listed.stdout and "fashion_mnist" in listed.stdout
    helped = distillkit("run", "--help")
    assert helped.returncode == 0 and "method: " in helped.stdout and "budget: " in helped.stdout
    for group in ("schedule", "role", "learner", "generator", "evaluator"):
        assert f"\n{group}:" in listed.stdout, group  # `distillkit list`: one heading per group
        assert f"{group}: " in helped.stdout, group    # `--help`: `group: option, option`
    assert "one_shot" in listed.stdout and "rounds" in listed.stdout and "expert_trajectories" in listed.stdout


def test_wandb_offline_writes_run_files(tmp_path):
    execute(compose(*[a for a in TINY if a != "tracker=none"], "tracker=wandb", "tracker.mode=offline"), tmp_path)
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_submitit_local_launcher_runs_a_sweep(tmp_path):
    out = distillkit("run", "-m", "hydra/launcher=local", *TINY, "ipc=1,2", f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr
    assert len(list(tmp_path.glob("*/results.json"))) == 2


# Runs `distillkit` with a real SIGINT raised right after its first checkpoint is on disk: a timed
# signal from outside raced a tiny run that could finish before the signal landed.
INTERRUPT_AFTER_FIRST_CHECKPOINT = """
import os, signal, sys
from distillkit import cli
# a process started in the background by a non-interactive shell inherits SIGINT ignored: Ctrl-C must reach it
signal.signal(signal.SIGINT, signal.default_int_handler)
from distillkit.generators.iterative import IterativeRun

save_checkpoint = IterativeRun.save_checkpoint

def save_then_interrupt(self):
    save_checkpoint(self)
    os.kill(os.getpid(), signal.SIGINT)

IterativeRun.save_checkpoint = save_then_interrupt
sys.exit(cli.main(sys.argv[1:]))
"""


def test_an_interrupted_run_says_where_it_stopped_and_resumes_to_the_same_set(tmp_path):
    """Ctrl-C mid-distillation: exit 130 naming the run directory; the same command with that
    directory continues from the checkpoint and ends with the images of an uninterrupted run."""
    args = (*TINY, "method=dm", "ipc=2", "generator.iterations=200", "generator.checkpoint_every=10")
    command = [sys.executable, "-c", INTERRUPT_AFTER_FIRST_CHECKPOINT, "run", *args, f"hydra.run.dir={tmp_path / 'b'}"]
    interrupted = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False,
                                 env={**os.environ, "DISTILLKIT_PROGRESS": "0"})
    assert interrupted.returncode == 130, interrupted.stderr
    assert f"rerun with hydra.run.dir={tmp_path / 'b'}" in interrupted.stderr.splitlines()[-1]
    assert torch.load(tmp_path / "b" / "dm_checkpoint.pt", weights_only=True)["position"] == 10

    resumed = distillkit("run", *args, f"hydra.run.dir={tmp_path / 'b'}")
    whole = distillkit("run", *args, f"hydra.run.dir={tmp_path / 'a'}")
    assert resumed.returncode == whole.returncode == 0, resumed.stderr + whole.stderr
    assert "resumed from" in (tmp_path / "b" / "app.log").read_text()
    a, b = (SyntheticSet.load(tmp_path / d / "distilled.safetensors").images for d in ("a", "b"))
    assert torch.equal(a, b)


def test_an_interrupted_evaluation_resumes_at_its_first_unfinished_seed(tmp_path, monkeypatch):
    from distillkit.evaluators import classifier

    ctx = tiny_context(tmp_path, "evaluator.num_seeds=2")
    cfg = ctx.cfg
    labels = torch.arange(10).repeat_interleave(2)
    distilled = SyntheticSet(ctx.train_images[:20].clone(), labels)
    train = classifier.train_classifier
    calls = []

    def interrupted_after_one(*args, **kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return train(*args, **kwargs)

    monkeypatch.setattr(classifier, "train_classifier", interrupted_after_one)
    with pytest.raises(KeyboardInterrupt):
        build(cfg.evaluator, "evaluator")(distilled, ctx)
    saved = json.loads((tmp_path / "eval_progress.json").read_text())["state"]["runs"]
    assert list(saved) == ["convnet/0"]

    def counted(*args, **kwargs):
        calls.append(kwargs["desc"])
        return train(*args, **kwargs)

    calls.clear()
    monkeypatch.setattr(classifier, "train_classifier", counted)
    resumed = build(cfg.evaluator, "evaluator")(distilled, ctx)
    assert calls == ["eval convnet seed 1"] and resumed.metrics["accuracy"].runs[0] == saved["convnet/0"]

    calls.clear()  # another set is another fingerprint: nothing is reused
    build(cfg.evaluator, "evaluator")(SyntheticSet(ctx.train_images[20:40].clone(), labels), ctx)
    assert calls == ["eval convnet seed 0", "eval convnet seed 1"]
