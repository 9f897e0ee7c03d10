"""Roles: the trained networks a method needs, built once, cached, and shared by name.

``roles:`` in the config holds one node per role (``conf/role/``): ``teacher`` (a classifier trained on
the real data: herding / k-center embeddings, difficulty scores), ``experts`` (expert trajectories for
trajectory matching), ``diffusion`` (a class-conditional diffusion model: DGS's pool, D2C's difficulty), ``student`` (the
fresh network a ``rounds`` learner trains). A stage names the roles it needs (``roles = ("teacher",)``)
and asks the context for them: ``ctx.role("teacher")``. Nothing trains a role privately: the first
request trains it (or loads the weights the user named) and stores it in the cache under
:func:`~distillkit.cache.cache_spec` (dataset, precision, settings), every later one reads it.

Training or loading a role never moves the global random state (both run in a forked RNG), so a run gives
the same numbers whether its roles came from the cache, from named weights, or were trained on the spot.

**Quality.** A role learns from the training data minus a held-out part (``ctx.split``, set by
``validation:``) and measures itself on that part when it is trained — a classifier its accuracy, a
diffusion model its denoising loss — stored beside it in the cache (``quality.json``) and written into
every run's ``results.json`` (``roles``) and summary. A role below its floor stops the run before any
stage works, with one line naming the role, its score and the key that trains it longer, unless its
``accept_below_floor`` is set (then the results say so).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from distillkit.cache import cache_spec
from distillkit.errors import UserError
from distillkit.ledger import ForwardCounter
from distillkit.validation import build

log = logging.getLogger("distillkit")

QUALITY_FILE = "quality.json"


def forked_rng(ctx):
    """The global RNG (CPU, and the context's CUDA device) forked: draws inside do not move it for what follows."""
    return torch.random.fork_rng(devices=[ctx.device] if ctx.device.type == "cuda" else [])


class Role:
    """One trained network (or set of networks) and how to make it.

    A role provides ``kind`` (its cache folder), ``settings(ctx)`` (what makes it, for the key),
    ``precision(ctx)``, ``train(ctx, folder)`` (write it into ``folder``; return what it measured of
    itself) and ``load(ctx, folder)``. Roles made of several entries (expert trajectories) override
    :meth:`prepare` and :meth:`materialise`.
    """

    kind: str = "role"
    cacheable: bool = True  # False: made from an object handed over in code, so nothing derived from it is cached
    partial: bool = False   # True: this job trains only part of the role (one shard of expert trajectories)
    key: str = "roles"      # where its settings sit in the config (set when it is built), for messages
    accept_below_floor: bool = False  # go on with a role under its quality floor (the results say so)

    def shortfall(self, quality: dict) -> str | None:
        """What is wrong with a role that measured ``quality`` (below its floor), or None."""
        return None

    def remedy(self, quality: dict) -> str:
        """How to train the role longer: the key, and its value now."""
        return f"train it longer ({self.key})"

    def describe(self, quality: dict) -> str:
        """One line for the run summary."""
        return ", ".join(f"{k} {v}" for k, v in quality.items()) or "no quality measured"

    def settings(self, ctx) -> dict:
        raise NotImplementedError

    def precision(self, ctx) -> str:
        raise NotImplementedError

    def train(self, ctx, folder: Path) -> dict:
        raise NotImplementedError

    def load(self, ctx, folder: Path):
        raise NotImplementedError

    def spec(self, ctx) -> dict:
        """The cache spec: the one key builder's view of this role."""
        return cache_spec(ctx.dataset_identity, self.precision(ctx), **self.settings(ctx))

    def prepare(self, ctx) -> Path | None:
        """Train this role into the cache unless it is there (in a forked RNG); its cache folder."""
        def train(folder: Path) -> None:
            with forked_rng(ctx):
                quality = self.train(ctx, folder)
            (folder / QUALITY_FILE).write_text(json.dumps(quality or {}, indent=2))

        return ctx.cache.get_or_create(self.kind, self.spec(ctx), train)

    def materialise(self, ctx) -> tuple[object, dict]:
        """``(the role, what it measured of itself when it was trained)``, training it first if needed."""
        folder = self.prepare(ctx)
        quality_file = folder / QUALITY_FILE
        quality = json.loads(quality_file.read_text()) if quality_file.is_file() else {}
        with forked_rng(ctx):  # building the network to load into draws initial weights
            return self.load(ctx, folder), quality


class Roles:
    """The run's roles: built (settings checked) from ``cfg.roles`` at once, trained only when asked for."""

    def __init__(self, nodes):
        self.roles = {name: build(node, f"roles.{name}") for name, node in (nodes or {}).items()}
        self._ready: dict[str, object] = {}
        self.report: dict[str, dict] = {}
        self.forwards: dict[str, ForwardCounter] = {}  # the cost ledger's count for each network role

    def role(self, name: str) -> Role:
        if name not in self.roles:
            raise UserError(f"no role '{name}' in the config (roles: {', '.join(self.roles) or 'none'})")
        return self.roles[name]

    def prepare(self, name: str, ctx) -> None:
        """Train role ``name`` into the cache (a job that only prepares roles stops after this)."""
        self.role(name).prepare(ctx)

    def get(self, name: str, ctx):
        """Role ``name``, trained or read from the cache once per run."""
        if name not in self._ready:
            self._ready[name] = value = self.use(self.role(name), name, ctx)
            if isinstance(value, torch.nn.Module):
                self.forwards[name] = ForwardCounter(value)
        return self._ready[name]

    def use(self, role: Role, label: str, ctx):
        """Any role object (named in the config or not, e.g. a scorer's networks), recorded under ``label``
        after its quality is checked against its floor."""
        value, quality = role.materialise(ctx)
        problem = role.shortfall(quality)
        if problem:
            message = f"role {label}: {problem}"
            if not role.accept_below_floor:
                raise UserError(f"{message}; {role.remedy(quality)}, or set {role.key}.accept_below_floor=true to go "
                                "on anyway")
            log.warning("%s (going on: %s.accept_below_floor=true)", message, role.key)
            quality = {**quality, "below_floor": True, "warning": f"{message}; accepted with accept_below_floor"}
        self.report[label] = quality
        return value
