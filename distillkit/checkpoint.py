"""The one resume mechanism of long loops: a state file written atomically, read back only when the
settings that made it are the settings of the run that wants to continue.

Iterative generators (DM, trajectory matching), the ``rounds`` schedule, the evaluator's finished
seeds and diffusion training all go through :class:`Checkpoint`; builders of cache entries keep their
checkpoint in the entry's ``.partial`` folder, so an interrupted build resumes too (``distillkit.cache``).

``resume`` is ``auto`` (continue when a checkpoint made with the same settings exists; a checkpoint
made with other settings is an error, or, with ``on_change="restart"``, ignored), ``true`` (continue
even under changed settings, with a warning; a missing checkpoint is an error) or ``false`` (start over).
A ``.json`` path holds JSON state (human-readable, e.g. finished evaluation seeds), any other path
``torch.save`` state read with ``weights_only=True``.

A checkpoint also keeps the seconds its loop has run, over every process that continued it; a resumed loop
hands the earlier processes' seconds to the phase that times it (:func:`carried_seconds`), so the cost ledger
of a run split by interruptions is the run's whole time (less work done after the last checkpoint, which is
redone).
"""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import torch

from distillkit.errors import UserError
from distillkit.io import atomic_path, write_json

log = logging.getLogger("distillkit")

RESUME_MODES = ("auto", "true", "false")
FORMAT_VERSION = 2  # 1: the per-loop formats before one mechanism served them all
# the seconds that checkpoints resumed inside the innermost carried_seconds() block had run before this process
_CARRIED: ContextVar[list[float] | None] = ContextVar("distillkit_carried_seconds", default=None)


@contextmanager
def carried_seconds():
    """A one-element list that collects, while the block runs, the seconds every checkpoint it resumes had
    already run in earlier processes: a timed phase adds them to its own clock."""
    box = [0.0]
    token = _CARRIED.set(box)
    try:
        yield box
    finally:
        _CARRIED.reset(token)


def resume_mode(value) -> str:
    """A resume setting as auto / true / false (Hydra may hand over a bool)."""
    from distillkit.validation import ConfigError

    text = str(value).lower()
    if text not in RESUME_MODES:
        raise ConfigError("resume", f"must be auto, true or false (got {value!r})")
    return text


class Checkpoint:
    """The state file of one loop at ``path`` (None: nothing is saved or resumed).

    ``kind`` names the loop in messages and tags the file; ``settings`` is everything that must match
    for a resume; ``resume_key`` is the config key a user sets to change ``resume`` (for messages).
    """

    def __init__(self, path: Path | None, kind: str, settings: dict, resume: bool | str = "auto",
                 resume_key: str = "resume", on_change: str = "error"):
        self.path = Path(path) if path is not None else None
        self.kind, self.settings, self.resume, self.resume_key = kind, settings, resume_mode(resume), resume_key
        self.on_change, self.format = on_change, f"distillkit.{kind}-checkpoint/{FORMAT_VERSION}"
        self.last_saved: Path | None = None
        self.started, self.earlier_seconds = time.perf_counter(), 0.0  # this process's clock; the ones before it

    @property
    def seconds(self) -> float:
        """Seconds the loop has run: in earlier processes up to their last checkpoint, and in this one."""
        return self.earlier_seconds + time.perf_counter() - self.started

    def save(self, position: int, state: dict) -> None:
        """Write ``state`` (at ``position``: an iteration, round or step count) in one atomic rename."""
        if self.path is None:
            return
        payload = {"format": self.format, "position": int(position), "settings": self.settings, "state": state,
                   "seconds": round(self.seconds, 3)}
        if self.path.suffix == ".json":
            write_json(self.path, payload)
        else:
            with atomic_path(self.path) as tmp:
                torch.save(payload, tmp)
        self.last_saved = self.path

    def load(self) -> tuple[int, dict] | None:
        """``(position, state)`` to continue from, or None to start fresh (see the module docstring)."""
        mode, path = self.resume, self.path
        if mode == "false" or path is None or (mode == "auto" and not path.is_file()):
            return None
        if not path.is_file():
            raise UserError(f"{self.resume_key}=true but there is no checkpoint at {path}")
        payload = self._read(path)
        if payload is None:
            return None
        changed = {k: (payload["settings"].get(k), v) for k, v in self.settings.items()
                   if payload["settings"].get(k) != v}
        if changed:
            if self.on_change == "restart" and mode == "auto":
                return None
            described = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            if mode == "auto":
                raise UserError(f"{path} was made with other settings ({described}); set {self.resume_key}=true to "
                                f"continue from it anyway, or {self.resume_key}=false to start over")
            log.warning("%s: resuming from %s under changed settings: %s", self.kind, path, described)
        self.last_saved = path
        self.earlier_seconds = float(payload.get("seconds", 0.0))  # absent in checkpoints older than the field
        carried = _CARRIED.get()
        if carried is not None:
            carried[0] += self.earlier_seconds
        return int(payload["position"]), payload["state"]

    def _read(self, path: Path) -> dict | None:
        try:
            if path.suffix == ".json":
                payload = json.loads(path.read_text())
            else:
                payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # truncated or foreign: say which file, not a pickle traceback
            if self.on_change == "restart":
                return None
            raise UserError(f"{path} is not a readable checkpoint ({err}); delete it or set "
                            f"{self.resume_key}=false") from None
        if not isinstance(payload, dict) or payload.get("format") != self.format:
            if self.on_change == "restart":
                return None
            raise UserError(f"{path} is not a distillkit {self.kind} checkpoint")
        return payload


class EvalProgress:
    """An evaluator's finished (model, seed) results in the run directory's file ``name``, valid for one
    fingerprint (the set and the protocol): an accuracy each for the classifier evaluator, a dict of metrics
    for the generative one. An interrupted evaluation resumes at its first unfinished seed."""

    def __init__(self, run_dir: Path | None, name: str, fingerprint: str):
        path = Path(run_dir) / name if run_dir is not None else None
        # another fingerprint (a changed set or protocol) or an unreadable file: evaluate again, never fail
        self.checkpoint = Checkpoint(path, "evaluation", {"fingerprint": fingerprint}, on_change="restart")
        resumed = self.checkpoint.load()
        self.runs = dict(resumed[1]["runs"]) if resumed is not None else {}

    def get(self, model: str, seed: int):
        return self.runs.get(f"{model}/{seed}")

    def record(self, model: str, seed: int, result) -> None:
        """``result``: anything JSON can hold."""
        self.runs[f"{model}/{seed}"] = result
        self.checkpoint.save(len(self.runs), {"runs": self.runs})
