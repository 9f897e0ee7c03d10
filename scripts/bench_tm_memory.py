"""Benchmark trajectory matching's unroll: peak memory and seconds per iteration against syn_steps,
with memory=full (every step's graph, MTT) and memory=checkpoint (one step's graph at a time).

    python scripts/bench_tm_memory.py                                   # syn_steps 10 20 40 80, both modes
    python scripts/bench_tm_memory.py --syn-steps 10 20 --device cuda

Setting: Fashion-MNIST, IPC 10, ConvNet-3 (the budget=cpu student), every synthetic image in every
step (MTT's batch_syn default; ``--batch-syn`` for fewer), DSA on, learnable lr and soft labels
(DATM / PAD: the most leaves); the student in fp32 unless `--bf16`.
The student starts from a fresh network and is matched to a nearby target: expert trajectories are
not needed to time the unroll, and the cost does not depend on where the parameters are.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` above what the set-up holds; on the CPU,
each (syn_steps, mode) runs in its own process and reports its peak resident set (VmHWM) above the
resident set after set-up. Each row also checks the checkpointed loss and gradients against the full
unroll's at the smallest syn_steps (relative error; the test suite asserts < 1e-5 on tiny data).
Prints a Markdown table and one JSON object per row; ``--json PATH`` writes them all.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from distillkit.cli import compose_config
from distillkit.generators.trajectory_matching.objective import matching_loss
from distillkit.generators.trajectory_matching.student import (
    FlatParameters,
    StepPlan,
    Student,
)
from distillkit.generators.trajectory_matching.unroll import (
    unroll_checkpointed,
    unroll_full,
)
from distillkit.io import write_json
from distillkit.results import device_name
from distillkit.run import make_context
from distillkit.tracking import NoTracker

UNROLLS = {"full": unroll_full, "checkpoint": unroll_checkpointed}


def resident_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (VmRSS: now, VmHWM: the peak since the process began)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


class UnrollCase:
    """The leaves (pixels, lr, soft-label logits), the student and one draw of step plans."""

    def __init__(self, dataset: str, ipc: int, model: str, device: str, bf16: bool = False, seed: int = 0):
        cfg = compose_config(["method=datm", f"dataset={dataset}", f"ipc={ipc}", "tracker=none",
                              f"device={device}", f"generator.model={model}"])
        self.ctx = make_context(cfg, run_dir=None, tracker=NoTracker())
        torch.manual_seed(seed)
        network = self.ctx.build_model(model).train()
        self.device = self.ctx.device
        self.student = Student(network, cfg.generator.dsa_strategy, bf16, self.device)
        labels = self.ctx.train_labels
        chosen = torch.cat([torch.nonzero(labels == c).flatten()[:ipc] for c in range(self.ctx.data.num_classes)])
        self.images = self.ctx.train_images[chosen].clone().to(self.device).requires_grad_(True)
        self.label_logits = torch.nn.functional.one_hot(labels[chosen], self.ctx.data.num_classes).float()
        self.label_logits = (5 * self.label_logits).to(self.device).requires_grad_(True)
        self.lr = torch.tensor(0.01, device=self.device, requires_grad=True)
        self.leaves = [self.images, self.lr, self.label_logits]
        self.start = torch.nn.utils.parameters_to_vector(network.parameters()).detach()
        self.target = self.start + 0.01 * torch.randn_like(self.start)
        self.layout = FlatParameters(network)

    def plans(self, syn_steps: int, batch_syn: int | None) -> list[StepPlan]:
        """Step k: ``batch_syn`` images (all when None) drawn with seed k, augmented with seed k."""
        n = len(self.images)
        return [StepPlan(torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:batch_syn or n]
                         .to(self.device), seed) for seed in range(syn_steps)]

    def step_fn(self, theta, plan, create_graph):
        return self.student.step(theta, plan, self.images, self.label_logits, self.lr, create_graph)

    def gradients(self, mode: str, plans: list[StepPlan]):
        for leaf in self.leaves:
            leaf.grad = None
        def loss_fn(final):
            return matching_loss(final, self.start, self.target)

        loss = UNROLLS[mode](self.step_fn, self.start, plans, loss_fn, self.leaves)
        return loss, [leaf.grad.clone() for leaf in self.leaves]


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args, syn_steps: int, mode: str) -> dict:
    """One row: seconds per unroll + backward and the peak memory above the set-up, in this process."""
    case = UnrollCase(args.dataset, args.ipc, args.model, args.device, args.bf16)
    plans = case.plans(syn_steps, args.batch_syn)
    cuda = case.device.type == "cuda"
    synchronise(case.device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(case.device)
        base = torch.cuda.memory_allocated(case.device)
    else:
        base = resident_kib("VmRSS") * 1024
    seconds = []
    for i in range(args.warmup + args.iterations):
        begin = time.perf_counter()
        loss, _ = case.gradients(mode, plans)
        synchronise(case.device)
        if i >= args.warmup:
            seconds.append(time.perf_counter() - begin)
    peak = torch.cuda.max_memory_allocated(case.device) if cuda else resident_kib("VmHWM") * 1024
    return {"syn_steps": syn_steps, "memory": mode, "batch_syn": args.batch_syn or len(case.images),
            "seconds_per_iteration": statistics.median(seconds),
            "seconds": [round(s, 3) for s in seconds], "peak_mib": (peak - base) / 2**20, "loss": float(loss),
            "device": str(case.device), "device_name": device_name(case.device), "torch": torch.__version__}


def relative_differences(reference: list[torch.Tensor], other: list[torch.Tensor]) -> list[float]:
    """``‖a − b‖ / ‖a‖`` for each pair of gradients."""
    return [float((a - b).norm() / a.norm()) for a, b in zip(reference, other)]


def agreement(args, syn_steps: int) -> dict:
    """Relative difference of the checkpointed loss and gradients from the full unroll's."""
    case = UnrollCase(args.dataset, args.ipc, args.model, args.device, args.bf16)
    plans = case.plans(syn_steps, args.batch_syn)
    (loss_full, grads_full), (loss_ckpt, grads_ckpt) = (case.gradients(mode, plans) for mode in UNROLLS)
    relative = relative_differences(grads_full, grads_ckpt)
    return {"syn_steps": syn_steps, "loss_relative_difference": float((loss_full - loss_ckpt).abs() / loss_full),
            "gradient_relative_difference": dict(zip(["pixels", "lr", "soft_labels"], relative))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--syn-steps", type=int, nargs="+", default=[10, 20, 40, 80])
    parser.add_argument("--modes", nargs="+", default=list(UNROLLS), choices=list(UNROLLS))
    parser.add_argument("--dataset", default="fashion_mnist")
    parser.add_argument("--ipc", type=int, default=10)
    parser.add_argument("--model", default="convnet")
    parser.add_argument("--batch-syn", type=int, help="synthetic images per student step (default: all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--bf16", action="store_true",
                        help="bf16 autocast of the student (the tables were measured without: fp32, where checkpointed "
                             "and full unrolls agree to 1e-5; under bf16 they differ by its rounding)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--json", type=Path, help="write every row and the agreement check here")
    parser.add_argument("--single", nargs=2, metavar=("SYN_STEPS", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.single:  # a child process: one row, printed as JSON
        print(json.dumps(measure(args, int(args.single[0]), args.single[1])))
        return
    check = agreement(args, min(args.syn_steps))
    rows = []
    for syn_steps in args.syn_steps:
        for mode in args.modes:
            # a process per row: the CPU's peak resident set cannot be reset, and freed memory is not returned
            child = [sys.executable, __file__, "--single", str(syn_steps), mode, "--dataset", args.dataset,
                     "--ipc", str(args.ipc), "--model", args.model,
                     *(["--batch-syn", str(args.batch_syn)] if args.batch_syn else []), "--device", args.device,
                     *(["--bf16"] if args.bf16 else []),
                     "--warmup", str(args.warmup), "--iterations", str(args.iterations)]
            output = subprocess.run(child, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(output.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), flush=True)
    first = rows[0]
    print(f"\n{args.dataset} IPC {args.ipc}, batch_syn {first['batch_syn']}, {args.model}, {first['device_name']}\n")
    print("| syn_steps | memory | s / iteration | peak memory above set-up (MiB) |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['syn_steps']} | {row['memory']} | {row['seconds_per_iteration']:.2f} | {row['peak_mib']:.0f} |")
    print(f"\ncheckpoint vs full at syn_steps {check['syn_steps']}: loss {check['loss_relative_difference']:.1e}, "
          + ", ".join(f"{k} {v:.1e}" for k, v in check["gradient_relative_difference"].items()))
    if args.json:
        write_json(args.json, {"rows": rows, "agreement": check, "args": {k: v for k, v in vars(args).items()
                                                                          if k not in ("json", "single")}})


if __name__ == "__main__":
    main()
