#!/usr/bin/env bash
# Trained roles at budget=cpu (the trained-roles issue): the teacher's held-out accuracy and `full` on digits,
# Fashion-MNIST and photo_patches; the headline `distillkit run method=dgs ipc=10` on digits with dgs vs
# dgs_pool_random over three sampler seeds; dm, herding, dgs vs random on photo_patches; dm on Fashion-MNIST
# (unchanged by the roles work); the digits teacher's accuracy against its step floor.
# Each run (scripts/bench_run.sh): outputs/bench/roles/<name>/ (results.json, the run's files), <name>.log and
# <name>.time.log (GNU time -v); a finished run is skipped, so rerunning the script finishes what is missing.
#   DISTILLKIT_CACHE=/tmp/dk_roles bash scripts/bench_roles.sh [name ...]   (no names: every run, in order)
set -uo pipefail
cd "$(dirname "$0")/.."
out=outputs/bench/roles
mkdir -p "$out"
declare -A runs=(
  [digits_dgs]="method=dgs ipc=10"
  [digits_dgs_seed1]="method=dgs ipc=10 sampler.seed=1"
  [digits_dgs_seed2]="method=dgs ipc=10 sampler.seed=2"
  [digits_dgs_pool_random]="method=dgs_pool_random ipc=10"
  [digits_dgs_pool_random_seed1]="method=dgs_pool_random ipc=10 sampler.seed=1"
  [digits_dgs_pool_random_seed2]="method=dgs_pool_random ipc=10 sampler.seed=2"
  [digits_random]="method=random ipc=10"
  [digits_herding]="method=herding ipc=10"
  [digits_full]="method=full"
  [photo_random]="dataset=photo_patches method=random ipc=10"
  [photo_herding]="dataset=photo_patches method=herding ipc=10"
  [photo_full]="dataset=photo_patches method=full"
  [photo_dm]="dataset=photo_patches method=dm ipc=10"
  [photo_dgs]="dataset=photo_patches method=dgs ipc=10"
  [photo_dgs_pool_random]="dataset=photo_patches method=dgs_pool_random ipc=10"
  [fmnist_herding]="dataset=fashion_mnist method=herding ipc=10"
  [fmnist_full]="dataset=fashion_mnist method=full"
  [fmnist_dm]="dataset=fashion_mnist method=dm ipc=10"
)
# the digits teacher's held-out accuracy against its optimiser steps (500 is budget=cpu's floor): prepare-only jobs
for steps in 5 100 250 1000; do
  runs[digits_teacher_${steps}_steps]="method=herding ipc=10 budget.teacher_min_steps=$steps schedule.stop_after=prepare roles.teacher.accept_below_floor=true"
done
order=(digits_dgs digits_dgs_seed1 digits_dgs_seed2 digits_dgs_pool_random digits_dgs_pool_random_seed1
       digits_dgs_pool_random_seed2 digits_random digits_herding digits_full photo_random photo_herding photo_full
       photo_dm photo_dgs photo_dgs_pool_random fmnist_herding fmnist_full fmnist_dm
       digits_teacher_5_steps digits_teacher_100_steps digits_teacher_250_steps digits_teacher_1000_steps)
[ $# -gt 0 ] && order=("$@")
for name in "${order[@]}"; do
  # shellcheck disable=SC2086  # the overrides are words
  bash scripts/bench_run.sh "$out" "$name" ${runs[$name]}
done
