"""Would training the evaluator's seeds as one batched ensemble pay on this device? Times K ConvNet-3 members
stacked with ``torch.func.stack_module_state`` and trained with ``vmap(functional_call)`` (one SGD over the
stacked parameters) against the same K members stepped one after another, on Fashion-MNIST-shaped batches of
100 images, and reports how far the batched members drift from the sequential ones.

    python scripts/probe_vmap_ensemble.py --members 3 --steps 6

Prints one JSON object: CPU seconds per member-step of each way, fp32 and bf16, and the largest weight
difference between batched member i and sequential member i after the fp32 steps.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch
from torch.func import functional_call, stack_module_state

from distillkit.models import create_model
from distillkit.training import classification_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    k = args.members
    torch.manual_seed(0)
    x, y = torch.randn(k, 100, 1, 28, 28), torch.randint(0, 10, (k, 100))
    members = []
    for seed in range(k):
        torch.manual_seed(seed)
        members.append(create_model("convnet", 1, 10, (28, 28)))
    alone = [copy.deepcopy(m) for m in members]
    params, buffers = stack_module_state(members)
    skeleton = copy.deepcopy(members[0]).to("meta")
    sgd = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}
    batched_opt = torch.optim.SGD(params.values(), **sgd)
    alone_opts = [torch.optim.SGD(m.parameters(), **sgd) for m in alone]

    def batched(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = torch.vmap(lambda p, b, xx: functional_call(skeleton, (p, b), (xx,)))(params, buffers, x)
        loss = sum(classification_loss(logits[i], y[i]) for i in range(k))  # member i's gradient is its own
        batched_opt.zero_grad()
        loss.backward()
        batched_opt.step()

    def sequential(bf16: bool) -> None:
        for i in range(k):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = classification_loss(alone[i](x[i]), y[i])
            alone_opts[i].zero_grad()
            loss.backward()
            alone_opts[i].step()

    for _ in range(3):
        batched(False)
        sequential(False)
    drift = max((params[name][i] - p).abs().max().item() for i in range(k) for name, p in alone[i].named_parameters())
    seconds = {}
    for bf16 in (False, True):
        for name, step in (("sequential", sequential), ("vmap", batched)):
            step(bf16)  # warm-up
            start = time.thread_time()
            for _ in range(args.steps):
                step(bf16)
            seconds[f"{name}_{'bf16' if bf16 else 'fp32'}"] = (time.thread_time() - start) / args.steps / k
    print(json.dumps({"members": k, "cpu_seconds_per_member_step": seconds,
                      "max_weight_difference_after_3_fp32_steps": drift, "threads": torch.get_num_threads(),
                      "torch": torch.__version__}, indent=2))


if __name__ == "__main__":
    main()
