"""Fingerprint what every method produces, to show that a refactor kept behaviour.

Runs each method's ``budget=smoke`` job on digits (and ``random`` / ``dm`` at ``budget=cpu``) in a
fresh cache, then records per job the evaluation accuracies and a SHA-256 of the distilled set's
tensors (images, labels, soft labels, lr — not the file's metadata, which names the config).

    python scripts/behaviour_fingerprint.py --out outputs/bench/fingerprint/before.json
    python scripts/behaviour_fingerprint.py --out after.json --compare before.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent


def default_jobs() -> dict[str, list[str]]:
    methods = sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))
    jobs = {f"{m}/smoke": [f"method={m}", "budget=smoke"] for m in methods}
    jobs.update({f"{m}/cpu": [f"method={m}", "budget=cpu"] for m in ("random", "dm")})
    return jobs


def tensor_digest(path: Path) -> str:
    tensors = load_file(str(path))
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().numpy().tobytes())
    return digest.hexdigest()


def run_job(name: str, overrides: list[str], work: Path, cache: Path) -> dict:
    run_dir = work / name.replace("/", "_")
    env = {**os.environ, "DISTILLKIT_CACHE": str(cache), "DISTILLKIT_PROGRESS": "0"}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "distillkit", "run", "dataset=digits", "tracker=none", *overrides,
                           f"hydra.run.dir={run_dir}"], capture_output=True, text=True, env=env, cwd=ROOT)
    seconds = round(time.perf_counter() - start, 1)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:], "seconds": seconds}
    results = json.loads((run_dir / "results.json").read_text())
    primary = results["primary_metric"]["name"]  # accuracy, or e.g. fid_held_out for a generative evaluator
    return {f"{primary}_runs": results["metrics"][primary]["runs"],
            "tensors_sha256": tensor_digest(run_dir / "distilled.safetensors"), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="where the fingerprints go (JSON)")
    parser.add_argument("--compare", type=Path, help="an earlier fingerprint file to compare with")
    parser.add_argument("--only", nargs="*", help="job names to run (default: all)")
    args = parser.parse_args()
    jobs = default_jobs()
    if args.only:
        jobs = {k: v for k, v in jobs.items() if k in args.only}
    with tempfile.TemporaryDirectory() as tmp:
        work, cache = Path(tmp) / "runs", Path(tmp) / "cache"
        fingerprints = {}
        for name, overrides in jobs.items():
            fingerprints[name] = run_job(name, overrides, work, cache)
            print(name, json.dumps(fingerprints[name]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(fingerprints, indent=2) + "\n")
    if args.compare:
        before = json.loads(args.compare.read_text())
        for name, now in fingerprints.items():
            old = before.get(name)
            if old is None:
                print(f"new       {name}: {now}")
                continue
            same = old.keys() == now.keys() and all(old[k] == now[k] for k in old if k != "seconds")
            runs = next((k for k in now if k.endswith("_runs")), "error")
            print(f"{'same     ' if same else 'DIFFERENT'} {name}: {old.get(runs)} -> {now.get(runs)}")


if __name__ == "__main__":
    main()
