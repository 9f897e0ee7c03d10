"""Content-addressed cache of trained teachers, expert trajectories, generators and pools.

An entry lives in ``<root>/<kind>/<key>/`` where ``key`` hashes the config that made it, so
a sweep trains each teacher once. The builder writes into ``<key>.partial/`` (kept across an
interruption, so long builders can resume from it) under an exclusive file lock; a finished
entry appears with one rename. Two jobs racing for the same key: one builds, the other waits on
the lock and then reads the finished entry.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf

# Bump when a change to the code makes old cache entries wrong.
CACHE_VERSION = 1


def _plain(spec):
    return OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else spec


def spec_key(kind: str, spec) -> str:
    blob = json.dumps({"kind": kind, "version": CACHE_VERSION, "spec": _plain(spec)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@contextmanager
def _locked(lock_path: Path):
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Cache:
    def __init__(self, root: str | Path, enabled: bool = True):
        self.root = Path(root).expanduser()
        self.enabled = enabled

    def entry(self, kind: str, spec) -> Path:
        return self.root / kind / spec_key(kind, spec)

    def has(self, kind: str, spec) -> bool:
        return self.enabled and (self.entry(kind, spec) / "spec.json").is_file()

    def get_or_create(self, kind: str, spec, build: Callable[[Path], None]) -> Path:
        """Return the entry's folder, calling ``build(partial_dir)`` first if it does not exist yet."""
        final = self.entry(kind, spec)
        if self.has(kind, spec):
            return final
        with _locked(final.with_suffix(".lock")):
            if self.has(kind, spec):  # another job finished it while we waited
                return final
            partial = final.with_suffix(".partial")
            partial.mkdir(parents=True, exist_ok=True)
            build(partial)
            (partial / "spec.json").write_text(json.dumps(_plain(spec), indent=2, default=str))
            if final.exists():  # a stale entry without spec.json (disabled cache, old crash)
                import shutil
                shutil.rmtree(final)
            os.replace(partial, final)
        return final
