"""The evaluator's ``precision`` and ``compile`` keys: fp32 trains and tests in fp32 on every host, bf16
really runs in bf16 where the CPU has bf16 units and stays close to fp32, a compiled network matches the
eager one to rounding, and the precision that ran keys the resumable progress."""

from __future__ import annotations

import argparse

import pytest
import torch

from distillkit.data.augment import DSA
from distillkit.evaluators import classifier
from distillkit.models import create_model
from distillkit.training import TrainSpec, accuracy, cpu_has_bf16_units, train_classifier
from distillkit.validation import build
from support import conv_output_dtypes, first_per_class, load_script, tiny_context

needs_bf16_units = pytest.mark.skipif(not cpu_has_bf16_units(), reason="needs a CPU with AMX or AVX512-BF16")


def evaluate(run_dir, *overrides: str):
    ctx = tiny_context(run_dir, "evaluator.num_seeds=2", *overrides)
    return build(ctx.cfg.evaluator, "evaluator")(first_per_class(ctx, 5), ctx)


@needs_bf16_units
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_precision_sets_the_dtype_of_training_and_testing_on_a_cpu_with_bf16_units(precision):
    seen = conv_output_dtypes(lambda: evaluate(None, f"evaluator.precision={precision}"))
    # building a model runs one fp32 forward (its feature size); training and testing run in ``precision``
    assert (torch.bfloat16 in seen) == (precision == "bf16")


@needs_bf16_units
def test_bf16_accuracy_stays_close_to_fp32_and_the_precision_keys_the_progress(tmp_path, monkeypatch):
    trained, train = [], classifier.train_classifier

    def counted(*args, **kwargs):
        trained.append(kwargs["desc"])
        return train(*args, **kwargs)

    monkeypatch.setattr(classifier, "train_classifier", counted)
    fp32 = evaluate(tmp_path, "evaluator.epochs=30", "evaluator.precision=fp32")
    bf16 = evaluate(tmp_path, "evaluator.epochs=30", "evaluator.precision=bf16")
    # the same set and seeds in the same run directory: bf16 trains again instead of reusing fp32's seeds
    assert trained == ["eval convnet seed 0", "eval convnet seed 1"] * 2
    assert (fp32.details["precision"], bf16.details["precision"]) == ("fp32", "bf16")
    a, b = fp32.metrics["accuracy"].mean, bf16.metrics["accuracy"].mean
    assert a > 30 and abs(a - b) < 10, (a, b)  # chance is 10; 200 test images, 50 training images: a loose bound


@pytest.mark.slow  # compiling takes about half a minute on one CPU thread
def test_a_compiled_network_trains_like_the_eager_one_to_rounding():
    ctx = tiny_context(None)
    chosen = first_per_class(ctx, 5)
    runs = []
    for compile in (False, True):
        torch.manual_seed(0)
        model = create_model("convnet", 1, 10, (8, 8), width=16)
        train_classifier(model, chosen.images, chosen.labels, TrainSpec(epochs=5, compile=compile),
                         augment=DSA(seed=0))
        runs.append((model, accuracy(model, ctx.test_images, ctx.test_labels, compile=compile)))
    (eager, eager_acc), (fused, fused_acc) = runs
    assert eager_acc == fused_acc
    for a, b in zip(eager.parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_the_evaluator_benchmark_times_training_and_the_sealed_test_pass_per_configuration(monkeypatch):
    """scripts/bench_evaluator.py on digits IPC 1 for 2 epochs: each configuration trains and opens the test set
    by name (a read outside ``final_evaluation`` would raise), and the first configuration is the speed-ups' base."""
    script = load_script("bench_evaluator", monkeypatch)
    args = argparse.Namespace(dataset="digits", device="cpu", configs=["fp32", "bf16"], epochs=2)
    out = script.bench_ipc(args, 1, 1)
    assert out["images"] == 10 and out["test_images"] > 400 and list(out["configs"]) == ["fp32", "bf16"]
    fp32, bf16 = out["configs"]["fp32"], out["configs"]["bf16"]
    assert fp32["speedup_wall"] == 1.0 and fp32["accuracy_delta"] == 0.0
    # what ran: bf16 only where the CPU has bf16 units (elsewhere the bf16 configuration runs, and says, fp32)
    assert (fp32["precision"], bf16["precision"]) == ("fp32", "bf16" if cpu_has_bf16_units() else "fp32")
    run = fp32["runs"][0]
    assert run["train_s"] > 0 and run["test_s"] > 0 and 0.0 <= run["accuracy"] <= 100.0
