"""The cache builds each entry once, also when two processes race for it."""

from __future__ import annotations

import multiprocessing as mp
import time

from distillkit.cache import Cache, spec_key


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
