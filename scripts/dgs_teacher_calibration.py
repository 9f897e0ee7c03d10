"""How calibrated DGS's teacher is, on the real test images and on a run's generated pool, and
whether recalibrating it would change which images DGS calls hard.

    python scripts/dgs_teacher_calibration.py outputs/bench/dgs_fmnist_bf16/dgs_seed0 [RUN_DIR ...]

Every run directory must hold pool.safetensors and results.json; the teacher is the one its config
names (read from the cache, trained if missing). Per run: accuracy, expected calibration error (15
equal-width bins, torchmetrics), negative log-likelihood and mean confidence of the teacher, and the
temperature T that minimises the NLL on the even-indexed real test images, with the ECE it leaves on
the odd-indexed ones. "Rank kept" is the Spearman correlation between DGS's difficulty 1 − p(y|x)
at T = 1 and at the fitted T on the pool: near 1, recalibration only moves the bin edges, which the
sampler's matching of real and pool histograms (both scored by the same teacher) absorbs. Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torchmetrics.functional.classification import multiclass_calibration_error
from torchmetrics.functional.regression import spearman_corrcoef

from distillkit.data.synthetic import SyntheticSet
from distillkit.run import make_context
from distillkit.scorers.difficulty import difficulty_from_logits
from distillkit.tracking import NoTracker
from distillkit.training import predict

BINS = 15


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 that minimises the NLL of softmax(logits / T) (LBFGS on log T)."""
    log_t = torch.zeros((), requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    optimizer.step(closure)
    return log_t.exp().item()


def calibration(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> dict:
    probabilities = (logits / temperature).softmax(1)
    return {"accuracy": 100 * (probabilities.argmax(1) == labels).float().mean().item(),
            "ece": 100 * multiclass_calibration_error(probabilities, labels, num_classes=logits.shape[1],
                                                      n_bins=BINS).item(),
            "nll": F.cross_entropy(logits / temperature, labels).item(),
            "confidence": 100 * probabilities.max(1).values.mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    args = parser.parse_args()

    print("| run | teacher steps | images | accuracy % | ECE % | NLL | mean confidence % | fitted T | "
          "ECE % at T (odd half) | rank kept (pool) |\n|---|---|---|---|---|---|---|---|---|---|")
    for run_dir in args.run_dirs:
        results = json.loads((run_dir / "results.json").read_text())
        cfg = OmegaConf.create(results["config"])
        steps = results.get("roles", {}).get("teacher", {}).get("steps", "?")  # runs before roles reported: ?
        ctx = make_context(cfg, run_dir=None, tracker=NoTracker())
        pool = SyntheticSet.load(run_dir / "pool.safetensors").to(ctx.device)
        with ctx.final_evaluation("scripts/dgs_teacher_calibration.py"):  # calibration is measured on the test set
            real_logits = predict(ctx.role("teacher"), ctx.test_images).float().cpu()
            real_labels = ctx.test_labels.cpu()
        pool_logits, pool_labels = predict(ctx.role("teacher"), pool.images).float().cpu(), pool.labels.cpu()
        temperature = fit_temperature(real_logits[0::2], real_labels[0::2])
        held_out = calibration(real_logits[1::2], real_labels[1::2], temperature)
        rank_kept = spearman_corrcoef(difficulty_from_logits(pool_logits, pool_labels),
                                      difficulty_from_logits(pool_logits / temperature, pool_labels)).item()
        rows = (("real test", real_logits, real_labels, f"{held_out['ece']:.2f}", "—"),
                ("pool", pool_logits, pool_labels, "—", f"{rank_kept:.4f}"))
        for name, logits, labels, held_out_ece, rank in rows:
            row = calibration(logits, labels)
            print(f"| `{run_dir.parent.name}/{run_dir.name}` | {steps} | {name} ({len(labels)}) | "
                  f"{row['accuracy']:.2f} | {row['ece']:.2f} | {row['nll']:.3f} | {row['confidence']:.2f} | "
                  f"{temperature:.3f} | {held_out_ece} | {rank} |")


if __name__ == "__main__":
    main()
