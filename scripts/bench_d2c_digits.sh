#!/usr/bin/env bash
# D2C on digits at budget=cpu, IPC 10 (a first real-data check of issue 19's methods; the issue's table is
# Fashion-MNIST at IPC 100): every subset judged by the generative evaluator (a UNet trained on it, measured at
# 500 and 1000 steps, 2 seeds; FID in the judge classifier's features). The scorer's diffusion model is the
# one DGS trains on digits (shared through the cache).
#   DISTILLKIT_CACHE=/tmp/dk_roles bash scripts/bench_d2c_digits.sh   → outputs/bench/d2c_digits/<name>/
set -uo pipefail
cd "$(dirname "$0")/.."
out=outputs/bench/d2c_digits
run() { bash scripts/bench_run.sh "$out" "$@"; }
run random ipc=10 method=random evaluator=generative
run d2c_select_only ipc=10 method=d2c_select_only
run d2c_attach_only ipc=10 method=d2c_attach_only
run d2c ipc=10 method=d2c
# the evaluator's DiT option (pixels: 8×8 digits in 2-px patches, 16 tokens; depth 6, width 128), REPA after its 2nd of 6
# blocks (REPA: the 8th of 28)
run random_dit ipc=10 method=random evaluator=generative evaluator.denoiser=dit
run d2c_dit ipc=10 method=d2c evaluator.denoiser=dit evaluator.attach.visual.block=transformer_blocks.1
run d2c_attach_only_dit ipc=10 method=d2c_attach_only evaluator.denoiser=dit evaluator.attach.visual.block=transformer_blocks.1
run d2c_select_only_dit ipc=10 method=d2c_select_only evaluator.denoiser=dit
run full method=full evaluator=generative "~evaluator.epochs" "~evaluator.min_steps" "~evaluator.dsa"   # full sets the classifier protocol's keys
