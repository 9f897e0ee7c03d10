"""How much of a CPU training step goes to page faults under glibc's default malloc, and what
``distillkit/malloc.py`` gives back: the same ConvNet-3 steps (Fashion-MNIST-shaped batches) in two child
processes, one with ``DISTILLKIT_MALLOC=system``, one with the default ``tuned``, one after the other.

    OMP_NUM_THREADS=1 python scripts/probe_malloc.py --batch 128 --steps 40

Prints one JSON object per setting: user and system CPU seconds of the steps, minor page faults, peak RSS, and a
checksum of the trained weights (equal in both: the allocator changes no number).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def child(batch: int, steps: int) -> dict:
    import resource

    import torch

    from distillkit.malloc import MALLOC
    from distillkit.models import create_model

    torch.manual_seed(0)
    model = create_model("convnet", channels=1, num_classes=10, image_size=(28, 28))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    images, labels = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    for _ in range(3):  # the heap settles
        step()
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(steps):
        step()
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"malloc": MALLOC, "batch": batch, "steps": steps,
            "user_s": round(after.ru_utime - before.ru_utime, 2), "sys_s": round(after.ru_stime - before.ru_stime, 2),
            "minor_faults": after.ru_minflt - before.ru_minflt, "peak_rss_mib": round(after.ru_maxrss / 1024),
            "weights_checksum": sum(float(p.double().sum()) for p in model.parameters())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.batch, args.steps)))
        return
    for setting in ("system", "tuned"):
        env = {**os.environ, "DISTILLKIT_MALLOC": setting}
        done = subprocess.run([sys.executable, __file__, "--child", "--batch", str(args.batch), "--steps",
                               str(args.steps)], env=env, capture_output=True, text=True, check=True)
        print(done.stdout.strip())


if __name__ == "__main__":
    main()
