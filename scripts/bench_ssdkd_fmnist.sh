#!/usr/bin/env bash
# SSD-KD's Fashion-MNIST table (issue 20) at budget=cpu: the BN teacher (a role, trained once and cached), KD on a
# random 10 % of the real data (the paper's control), and the data-free rows — `ssdkd` with a 6 000-image buffer
# (ipc=600), `fast_dfkd` with its unbounded bank, `deepinversion`, then SSD-KD's ablations — each at seeds 0, 1, 2,
# every rounds run with a learning curve on the held-out tenth (schedule.curve_every) for the time-to-accuracy
# comparison (scripts/ssdkd_speedup.py). Rerunning the script skips what is finished.
# ROWs pick rows (default: all, in the order below); SEEDS picks seeds (default "0 1 2").
#   DISTILLKIT_CACHE=/tmp/dk_roles OMP_NUM_THREADS=1 bash scripts/bench_ssdkd_fmnist.sh [ROW ...]   → outputs/bench/ssdkd_fmnist/
set -uo pipefail
cd "$(dirname "$0")/.."
out=outputs/bench/ssdkd_fmnist
common=(dataset=fashion_mnist ipc=600)
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(ssdkd fast_dfkd kd_random deepinversion ssdkd_no_diversity ssdkd_no_difficulty
                               ssdkd_uniform ssdkd_no_partial)
for row in "${rows[@]}"; do
  if [ "$row" = kd_random ]; then   # one run: the evaluator distils the budget's seeds of students on the subset
    bash scripts/bench_run.sh "$out" kd_random method=random evaluator=kd_student "${common[@]}" \
      model@roles.teacher.model=convnet_bn   # the data-free rows' teacher
    continue
  fi
  for seed in ${SEEDS:-0 1 2}; do
    bash scripts/bench_run.sh "$out" "${row}_s$seed" "method=$row" "${common[@]}" "seed=$seed" schedule.curve_every=4
  done
done
