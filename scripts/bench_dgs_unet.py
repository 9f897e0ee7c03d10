"""Seconds per diffusion-UNet training step and per sampling forward, fp32 against bf16, at the UNet of
a budget (what sets how many training steps `budget=cpu` can afford in its 30 minutes).

    python scripts/bench_dgs_unet.py                         # budget=cpu's UNet on Fashion-MNIST's shape
    python scripts/bench_dgs_unet.py --budget smoke --steps 3

The step is the one `train_unet` takes (noise prediction, MSE, AdamW) on random inputs of
Fashion-MNIST's shape (1 × 28 × 28, which three levels halve without padding; 10 classes + the null
class); a sampling forward is one guided DDIM step's network call (2 × the batch).
bf16 applies only on CUDA or a CPU with bf16 units; the first two steps are warm-up, not timed.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from distillkit.cli import compose_config
from distillkit.generators.diffusion_pool import build_unet
from distillkit.training import autocast, bf16_applies


def seconds_per_call(call, repeats: int) -> float:
    for _ in range(2):
        call()
    begin = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - begin) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed repeats of each call")
    parser.add_argument("--sample-batch", type=int, default=100, help="images per guided sampling step")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    cfg = compose_config(["method=dgs", f"budget={args.budget}"])
    unet_cfg, train = (OmegaConf.to_container(cfg.generator[k], resolve=True) for k in ("unet", "train"))
    device = torch.device(args.device)
    size, channels, classes = (28, 28), 1, 10
    for amp in (False, True):
        torch.manual_seed(0)
        unet = build_unet(unet_cfg, channels, classes, size).to(device)
        optimizer = torch.optim.AdamW(unet.parameters(), lr=train["lr"])
        batch = train["batch_size"]
        clean = torch.randn(batch, channels, *size, device=device)
        t = torch.randint(0, train["timesteps"], (batch,), device=device)
        labels = torch.randint(0, classes + 1, (batch,), device=device)

        def train_step():
            with autocast(device, amp, on_cpu=True):
                predicted = unet(clean, t, class_labels=labels).sample
            loss = F.mse_loss(predicted.float(), clean)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        noisy = torch.randn(2 * args.sample_batch, channels, *size, device=device)
        cond = torch.randint(0, classes + 1, (len(noisy),), device=device)

        @torch.no_grad()
        def sampling_forward():
            with autocast(device, amp, on_cpu=True):
                unet(noisy, torch.tensor(500, device=device), class_labels=cond).sample.float()

        step, forward = seconds_per_call(train_step, args.steps), seconds_per_call(sampling_forward, args.steps)
        precision = "bf16" if bf16_applies(device, amp, on_cpu=True) else "fp32"
        print(f"amp={amp} ({precision}): width {unet_cfg['width']}, batch {batch}: {step:.3f} s per training step; "
              f"{forward:.3f} s per guided sampling step of {args.sample_batch} images; "
              f"{train['steps']} steps ≈ {train['steps'] * step / 60:.1f} min")


if __name__ == "__main__":
    main()
