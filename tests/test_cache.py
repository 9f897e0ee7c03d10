"""The cache builds each entry once, also when two processes race for it; with the cache off, a run builds in
a scratch folder of its own and never touches an entry."""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

from distillkit.cache import Cache, spec_key
from distillkit.run import execute
from support import TINY, compose


def test_builds_once_then_reads(tmp_path):
    calls = []

    def build(folder):
        calls.append(1)
        (folder / "model.bin").write_text("weights")

    cache = Cache(tmp_path)
    first = cache.get_or_create("teacher", {"a": 1}, build)
    second = cache.get_or_create("teacher", {"a": 1}, build)
    assert first == second and len(calls) == 1 and (first / "model.bin").read_text() == "weights"
    assert cache.get_or_create("teacher", {"a": 2}, build) != first and len(calls) == 2


def test_key_depends_on_content_not_order():
    assert spec_key("t", {"a": 1, "b": 2}) == spec_key("t", {"b": 2, "a": 1}) != spec_key("t", {"a": 1, "b": 3})


def test_failed_build_leaves_no_entry(tmp_path):
    cache = Cache(tmp_path)

    def broken(folder):
        raise RuntimeError("boom")

    try:
        cache.get_or_create("pool", {"x": 1}, broken)
    except RuntimeError:
        pass
    assert not cache.has("pool", {"x": 1})


def _racer(root, log):
    def build(folder):
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(0.5)
        (folder / "done").write_text("ok")

    Cache(root).get_or_create("teacher", {"race": True}, build)


def test_two_racing_processes_build_once(tmp_path):
    log = tmp_path / "log.txt"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_racer, args=(tmp_path / "cache", log)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    assert log.read_text().count("built") == 1


# Runs `distillkit` and prints, as its last line, the scratch folder a disabled cache registered for removal
# at exit and the files in it then (just before exit): what the run built there.
RECORD_SCRATCH = """
import atexit, hashlib, json, shutil, sys
from pathlib import Path

scratch = []
register = atexit.register

def recording_register(function, *args, **kwargs):
    if function is shutil.rmtree:
        scratch.append(Path(args[0]))
    return register(function, *args, **kwargs)

atexit.register = recording_register
from distillkit import cli

try:
    code = cli.main(sys.argv[1:])
finally:
    files = {str(f.relative_to(scratch[0])): hashlib.sha256(f.read_bytes()).hexdigest()
             for f in (scratch[0].rglob("*") if scratch else ()) if f.is_file()}
    print(json.dumps({"scratch": [str(p) for p in scratch], "files": files}))
sys.exit(code)
"""


def snapshot(root: Path) -> dict:
    """Every path under ``root`` with its mtime (ns) and, for files, a hash of its bytes."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*"))}


def test_a_run_with_the_cache_off_builds_in_scratch_and_never_touches_a_finished_entry(tmp_path):
    """cache.enabled=false: the same teacher spec is built again in a scratch folder of the process (the
    finished entry is neither read, replaced nor touched), the run completes, and the scratch folder is
    gone once the process has exited."""
    cache, scratch_parent = tmp_path / "cache", tmp_path / "tmp"
    scratch_parent.mkdir()
    args = (*TINY, "method=herding", "ipc=2", f"cache.dir={cache}")
    execute(compose(*args), tmp_path / "cached")
    [model] = cache.rglob("model.safetensors")
    entry = model.parent
    assert entry.parent.name == "classifier" and (entry / "spec.json").is_file()
    before = snapshot(cache)

    out = subprocess.run([sys.executable, "-c", RECORD_SCRATCH, "run", *args, "cache.enabled=false",
                          f"hydra.run.dir={tmp_path / 'off'}"], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "DISTILLKIT_PROGRESS": "0", "TMPDIR": str(scratch_parent)})
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "off" / "results.json").read_text())["status"] == "evaluated"
    recorded = json.loads(out.stdout.strip().splitlines()[-1])
    [scratch] = map(Path, recorded["scratch"])
    assert scratch.parent == scratch_parent and scratch.name.startswith("distillkit-uncached-")
    # built there under the same key, to the same weights as the cached entry
    built = str(model.relative_to(cache))
    assert recorded["files"][built] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert not scratch.exists() and not any(scratch_parent.iterdir())  # removed at exit
    assert snapshot(cache) == before  # no entry read-locked, replaced, added or touched
