"""On a CUDA device (``python -m pytest -m gpu``; skipped without one): smoke runs of dm, mtt and dgs on
``device=cuda``, bf16 really in use under autocast (the evaluator's networks, DM's agent), and the
evaluator's accuracy on CUDA close to the CPU's for the same set."""

from __future__ import annotations

import json

import pytest
import torch

from distillkit.run import execute
from distillkit.validation import build
from support import TINY, compose, conv_output_dtypes, first_per_class, tiny_context

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("method", ["dm", "mtt", "dgs"])
def test_smoke_run_on_cuda_writes_results(method, tmp_path):
    execute(compose(*TINY, f"method={method}", "ipc=2", "device=cuda"), tmp_path)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["device"].startswith("cuda") and results["device_name"] == torch.cuda.get_device_name(0)
    assert results["method"] == method and 0 <= results["accuracy"]["mean"] <= 100
    assert (tmp_path / "distilled.safetensors").is_file()


@pytest.mark.parametrize("amp", [True, False])
def test_evaluator_trains_in_bf16_on_cuda_when_amp_is_on(amp, tmp_path):
    ctx = tiny_context(None, "device=cuda", "evaluator.epochs=2", f"evaluator.precision={'bf16' if amp else 'fp32'}")
    evaluator = build(ctx.cfg.evaluator, "evaluator")
    seen = conv_output_dtypes(lambda: evaluator(first_per_class(ctx, 2), ctx))
    assert seen == ({torch.bfloat16} if amp else {torch.float32})


def test_dm_agent_runs_in_bf16_on_cuda(tmp_path):
    ctx = tiny_context(None, "method=dm", "ipc=2", "device=cuda", "generator.iterations=2")
    generator = build(ctx.cfg.generator, "generator")
    assert generator.uses_amp(ctx.device)
    seen = conv_output_dtypes(lambda: generator(ctx))
    assert torch.bfloat16 in seen


# The same set, 3 seeds: bf16 on CUDA against fp32 on the CPU, and different random draws, may move the
# mean by a few points on 200 test images (0.5 % each); more than 5 means the device changes the protocol.
TOLERANCE = 5.0


def test_evaluator_accuracy_on_cuda_is_close_to_the_cpu():
    accuracy = {}
    for device in ("cpu", "cuda"):
        ctx = tiny_context(None, f"device={device}", "evaluator.epochs=50", "evaluator.num_seeds=3")
        report = build(ctx.cfg.evaluator, "evaluator")(first_per_class(ctx, 10), ctx)
        accuracy[device] = report.primary_metric.mean
    assert accuracy["cpu"] > 50, accuracy  # a set that trains at all
    assert abs(accuracy["cuda"] - accuracy["cpu"]) <= TOLERANCE, accuracy
