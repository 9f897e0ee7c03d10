"""Content-addressed cache of what runs share: trained roles (teachers, expert trajectories, diffusion
models), and what is computed from them (generated pools, real-image scores).

An entry lives in ``<root>/<kind>/<key>/`` where ``key`` hashes the *spec* that made it — built by
:func:`cache_spec`, the one key builder: the dataset's identity, the precision the work ran in, and
the maker's own settings — so a sweep trains each teacher once, and a bf16 and an fp32 teacher never
share an entry. The builder writes into ``<key>.partial/`` (kept across an interruption, so long
builders resume from it) under an exclusive file lock; a finished entry appears with one rename. Two
jobs racing for the same key: one builds, the other waits on the lock and then reads the entry.

``cache.enabled=false`` reads no entry and writes none: builds go to a scratch folder of this process,
removed when it exits, so a run with the cache off never replaces an entry another job may be reading.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from omegaconf import DictConfig, OmegaConf

# Bump when a change to the code makes old cache entries wrong.
# 2: one key builder (dataset, precision, settings) for every entry
CACHE_VERSION = 2


def _plain(spec):
    return OmegaConf.to_container(spec, resolve=True) if isinstance(spec, DictConfig) else spec


def cache_spec(dataset: dict, precision: str, **settings) -> dict:
    """The spec of anything cached: the dataset it was made from, the precision it ran in ("bf16" /
    "fp32"), and the settings of whatever made it (for a derived artefact: the spec of its source)."""
    return {"dataset": dataset, "precision": precision, **settings}


def content_digest(*tensors) -> str:
    """sha256 of the tensors' dtypes, shapes and bytes: the identity of a pool (real images, a random subset
    of them, or a generated pool) without knowing where it came from."""
    import torch

    digest = hashlib.sha256()
    for tensor in tensors:
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(repr((str(flat.dtype), tuple(tensor.shape))).encode())
        digest.update(flat.view(torch.uint8).numpy())
    return digest.hexdigest()


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
    """Entries by (kind, spec) under ``root``; with ``enabled=False``, private scratch builds instead."""

    def __init__(self, root: str | Path, enabled: bool = True):
        self.root = Path(root).expanduser()
        self.enabled = enabled
        self._scratch: Path | None = None

    def entry(self, kind: str, spec) -> Path:
        return self.root / kind / spec_key(kind, spec)

    def has(self, kind: str, spec) -> bool:
        return self.enabled and (self.entry(kind, spec) / "spec.json").is_file()

    def find(self, kind: str, spec) -> Path | None:
        """The finished entry's folder (or this process's scratch build of it), else None."""
        if self.enabled:
            return self.entry(kind, spec) if self.has(kind, spec) else None
        folder = self._scratch / kind / spec_key(kind, spec) if self._scratch is not None else None
        return folder if folder is not None and (folder / "spec.json").is_file() else None

    def get_or_create(self, kind: str, spec, build: Callable[[Path], None]) -> Path:
        """Return the entry's folder, calling ``build(partial_dir)`` first if it does not exist yet."""
        if not self.enabled:
            return self._scratch_entry(kind, spec, build)
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
            if final.exists():  # a stale entry without spec.json (an old crash)
                shutil.rmtree(final)
            os.replace(partial, final)
        return final

    def _scratch_entry(self, kind: str, spec, build: Callable[[Path], None]) -> Path:
        """Build into this process's scratch folder (once per spec), never touching the real entries."""
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="distillkit-uncached-"))
            atexit.register(shutil.rmtree, self._scratch, ignore_errors=True)
        folder = self._scratch / kind / spec_key(kind, spec)
        if not (folder / "spec.json").is_file():
            shutil.rmtree(folder, ignore_errors=True)  # a build that failed earlier in this process
            folder.mkdir(parents=True)
            build(folder)
            (folder / "spec.json").write_text(json.dumps(_plain(spec), indent=2, default=str))
        return folder
