#!/usr/bin/env bash
# One benchmark run: `distillkit run tracker=none <overrides> hydra.run.dir=<out>/<name>` under GNU time -v,
# skipped when <out>/<name>/results.json exists (so a benchmark script can be rerun to finish what is missing).
# Writes <out>/<name>/ (the run's files), <out>/<name>.log (its output) and <out>/<name>.time.log.
#   bash scripts/bench_run.sh OUT NAME [override ...]
set -uo pipefail
out=$1 name=$2
shift 2
mkdir -p "$out"
[ -f "$out/$name/results.json" ] && { echo "skip $name (done)"; exit 0; }
echo "run $name: $*"
DISTILLKIT_PROGRESS=log /usr/bin/time -v -o "$out/$name.time.log" \
  distillkit run tracker=none "$@" "hydra.run.dir=$out/$name" > "$out/$name.log" 2>&1
tail -n 1 "$out/$name.log"
