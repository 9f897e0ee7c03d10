"""Seconds per diffusion-UNet training step and per guided sampling step, fp32 against bf16, at the UNet
of a budget (what sets how many training steps `budget=cpu` can afford in its 30 minutes).

    python scripts/bench_dgs_unet.py                         # budget=cpu's UNet on Fashion-MNIST's shape
    python scripts/bench_dgs_unet.py --budget smoke --steps 3

Times distillkit's own `train_denoiser` (noise prediction, AdamW, clipping, EMA) and `sample_ddim` (DDIM
with classifier-free guidance) on random pixels of Fashion-MNIST's shape (1 × 28 × 28, which three
levels halve without padding; 10 classes + the null class). Each is run for 2 and for 2 + `--steps`
steps, and the difference is divided by `--steps`, so start-up and saving do not count. bf16 applies
only on CUDA or a CPU with bf16 units.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from distillkit.cli import compose_config
from distillkit.diffusion.denoisers import build_unet
from distillkit.diffusion.sampling import sample_ddim
from distillkit.diffusion.training import train_denoiser
from distillkit.training import bf16_applies

WARM_UP = 2


def seconds_per_step(run, steps: int) -> float:
    """``run(n)`` does n steps; the time of ``steps`` more than a warm-up run, per step."""
    timings = []
    for n in (WARM_UP, WARM_UP + steps):
        begin = time.perf_counter()
        run(n)
        timings.append(time.perf_counter() - begin)
    return (timings[1] - timings[0]) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed steps of each")
    parser.add_argument("--sample-batch", type=int, default=100, help="images per guided sampling step")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    cfg = compose_config(["method=dgs", f"budget={args.budget}"])
    unet_cfg, train = (OmegaConf.to_container(cfg.roles.diffusion[k], resolve=True) for k in ("unet", "train"))
    guidance = float(cfg.generator.guidance_scale)
    device = torch.device(args.device)
    size, channels, classes = (28, 28), 1, 10
    pixels = torch.rand(4 * train["batch_size"], channels, *size, device=device) * 2 - 1
    labels = torch.randint(0, classes, (len(pixels),), device=device)
    sample_labels = torch.randint(0, classes, (args.sample_batch,), device=device)
    for amp in (False, True):
        torch.manual_seed(0)
        unet = build_unet(unet_cfg, channels, classes, size).to(device)

        def train_steps(n: int) -> None:
            with tempfile.TemporaryDirectory() as folder:
                train_denoiser(unet, pixels, labels, classes, {**train, "steps": n, "checkpoint_every": n}, Path(folder),
                           0, amp)

        def sampling_steps(n: int) -> None:
            sample_ddim(unet, sample_labels, classes, train, n, guidance, torch.Generator(device).manual_seed(0), amp)

        step, sampling = seconds_per_step(train_steps, args.steps), seconds_per_step(sampling_steps, args.steps)
        precision = "bf16" if bf16_applies(device, amp, on_cpu=True) else "fp32"
        print(f"amp={amp} ({precision}): width {unet_cfg['width']}, batch {train['batch_size']}: {step:.3f} s per "
              f"training step; {sampling:.3f} s per guided sampling step of {args.sample_batch} images; "
              f"{train['steps']} steps ≈ {train['steps'] * step / 60:.1f} min")


if __name__ == "__main__":
    main()
