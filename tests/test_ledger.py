"""The cost ledger (issue 21): results.json's ``cost``, the summary line after the final line, the tracker's
``cost/…`` metrics — present, and plausible on tiny runs."""

from __future__ import annotations

import pytest
import torch

from distillkit.checkpoint import Checkpoint
from distillkit.ledger import as_metrics, cost_line
from distillkit.run import execute
from distillkit.schedules import Artefacts
from distillkit.tracking import NoTracker
from support import TINY, compose, distillkit

FIELDS = {"seconds", "peak_rss_mib", "cuda_max_allocated_mib", "distilled_set_bytes", "teacher_forward_passes",
          "teacher_images_forwarded", "role_forward_passes", "images_generated"}


def test_a_random_run_costs_no_teacher_pass_and_generates_nothing(tmp_path, monkeypatch):
    logged = {}
    monkeypatch.setattr(NoTracker, "log_metrics", lambda self, metrics, step=None: logged.update(metrics))
    payload = execute(compose(*TINY, "method=random", "ipc=2"), tmp_path)
    ledger = payload["cost"]
    assert set(ledger) == FIELDS
    assert ledger["peak_rss_mib"] > 10 and ledger["cuda_max_allocated_mib"] is None  # a CPU run
    assert ledger["distilled_set_bytes"] == (tmp_path / "distilled.safetensors").stat().st_size
    assert ledger["teacher_forward_passes"] == 0 and ledger["images_generated"] == 0
    assert set(ledger["seconds"]) == {"data", "roles", "generator", "scorer", "sampler", "evaluator", "total"}
    assert ledger["seconds"]["total"] == pytest.approx(sum(payload["seconds"].values()), abs=0.01)
    assert logged["cost/peak_rss_mib"] == ledger["peak_rss_mib"] and "cost/seconds/evaluator" in logged
    assert as_metrics(ledger).keys() <= logged.keys()
    line = cost_line(payload)
    assert line.startswith("cost: ") and "teacher forward passes 0" in line and "images generated 0" in line


def test_teacher_passes_are_counted_for_a_teacher_on_the_fly(tmp_path):
    """evaluator.soft_source=teacher: one teacher pass per training step of the one evaluation network."""
    payload = execute(compose(*TINY, "method=random", "ipc=2", "evaluator.soft_source=teacher"), tmp_path)
    ledger, steps = payload["cost"], payload["train_steps"]
    assert payload["soft_labels"] == {"loss": "soft_ce", "source": "teacher", "temperature": 1.0}
    assert steps == 3 and ledger["teacher_forward_passes"] == steps * payload["config"]["evaluator"]["num_seeds"]
    assert ledger["teacher_images_forwarded"] == ledger["teacher_forward_passes"] * 20  # the whole set each step
    assert ledger["role_forward_passes"] == {"teacher": ledger["teacher_forward_passes"]}


def test_herding_counts_the_teacher_embeddings_and_dm_its_generated_images(tmp_path):
    herding = execute(compose(*TINY, "method=herding", "ipc=2"), tmp_path / "herding")["cost"]
    assert herding["teacher_images_forwarded"] == 300  # every real training image embedded once (30 × 10)
    dm = execute(compose(*TINY, "method=dm", "ipc=2"), tmp_path / "dm")["cost"]
    assert dm["images_generated"] == 20 and dm["teacher_forward_passes"] == 0


def test_the_cli_prints_the_ledger_after_the_final_line(tmp_path):
    done = distillkit("run", *TINY, "method=random", "ipc=2", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert "accuracy" in lines[-2] and lines[-1].startswith("cost: ")


def test_a_phase_resumed_from_a_checkpoint_counts_the_earlier_processes_seconds(tmp_path):
    """A loop checkpointed after 100 s of an earlier process and continued in a timed phase: the phase's
    seconds are the whole loop's, and the next checkpoint carries them on; outside a phase nothing is carried."""
    earlier = Checkpoint(tmp_path / "loop.pt", "loop", {"size": 1})
    earlier.started -= 100.0  # as if its process had run the loop for 100 s before this save
    earlier.save(3, {"x": 1})

    artefacts = Artefacts(save_set=None)
    with artefacts.timed("loop"):
        later = Checkpoint(tmp_path / "loop.pt", "loop", {"size": 1})
        assert later.load() == (3, {"x": 1})
        later.save(4, {"x": 2})
    assert 100.0 <= artefacts.seconds["loop"] < 110.0
    assert Checkpoint(tmp_path / "loop.pt", "loop", {"size": 1}).load() == (4, {"x": 2})
    assert torch.load(tmp_path / "loop.pt", weights_only=True)["seconds"] >= 100.0

    untimed = Artefacts(save_set=None)
    with untimed.timed("other"):
        pass
    assert untimed.seconds["other"] < 1.0  # a load outside the block above carried nothing into it
