"""Trajectory matching in bf16 against fp32: the matching loss, the gradients of the pixels, the lr and
the soft labels, and the time of one unroll, from a real expert trajectory.

    python scripts/bench_tm_precision.py --trajectory ~/.cache/distillkit/expert_trajectory/<key>/trajectory.safetensors

Setting: `scripts/bench_tm_memory.py`'s `UnrollCase` (Fashion-MNIST IPC 10, ConvNet-3, DATM leaves,
DSA), `syn_steps` 10 × `batch_syn` 20 (the budget=cpu unroll), full unroll; the student starts at the
expert's epoch t and is matched to epoch t + 2. bf16 applies only on CUDA or a CPU with bf16 units.
"""

from __future__ import annotations

import argparse
import time

import torch.nn.functional as F
from safetensors.torch import load_file

from bench_tm_memory import UnrollCase, relative_differences


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trajectory", required=True, help="an expert's trajectory.safetensors (from the cache)")
    parser.add_argument("--start-epochs", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    trajectory = load_file(args.trajectory)["trajectory"]
    case = UnrollCase("fashion_mnist", 10, "convnet", args.device)
    plans = case.plans(10, 20)
    for start in args.start_epochs:
        case.start, case.target = trajectory[start].to(case.device), trajectory[start + 2].to(case.device)
        measured = {}
        for amp in (False, True):
            case.student.amp = amp
            begin = time.perf_counter()
            measured[amp] = (*case.gradients("full", plans), time.perf_counter() - begin)
        (loss32, grads32, s32), (loss16, grads16, s16) = measured[False], measured[True]
        cosines = [float(F.cosine_similarity(a.flatten(), b.flatten(), dim=0)) for a, b in zip(grads32, grads16)]
        relative = relative_differences(grads32, grads16)
        print(f"start epoch {start}: loss fp32 {float(loss32):.5f} bf16 {float(loss16):.5f}; gradient cosine "
              f"pixels/lr/soft labels {', '.join(f'{c:.4f}' for c in cosines)}; relative difference "
              f"{', '.join(f'{r:.3f}' for r in relative)}; seconds fp32 {s32:.2f} bf16 {s16:.2f}")


if __name__ == "__main__":
    main()
