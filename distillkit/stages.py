"""The contracts between the stages — the architecture's reference.

A method is a *schedule* (``conf/schedule``) running four kinds of stage, each a small class built
from its config group (``_target_``) and called with the run's :class:`~distillkit.context.Context`:

============  ====================================  =====================================================
stage         call                                  returns
============  ====================================  =====================================================
generator     ``generator(ctx)``                    a :class:`~distillkit.data.synthetic.SyntheticSet`: a
                                                    pool of candidates, or the final set
scorer        ``scorer(pool, ctx)``                 :class:`Scores` (one value per pool sample), or None
sampler       ``sampler(pool, scores, ctx)``        indices into the pool (a long tensor)
evaluator     ``evaluator(distilled, ctx)``         an :class:`EvalReport`: named metrics, the primary one
              ``evaluator.assess(models, ctx)``     and its direction; ``assess`` tests networks trained
                                                    elsewhere (the ``rounds`` schedule's learner) when the
                                                    evaluator ``assesses_networks``
learner       ``learner.step(batch, ctx)``          per-sample feedback (e.g. losses) or None; only the
                                                    ``rounds`` schedule has a learner; ``batch.weights``
                                                    (the sampler's ``weights``) weigh its samples' losses
============  ====================================  =====================================================

Every stage may name the **roles** it asks the context for (``roles = ("teacher",)``): trained
networks built once, cached, and shared (``ctx.roles.get("teacher")``, see :mod:`distillkit.roles`).
The schedule materialises them before any stage works, so a role that is not good enough stops
the run early, and a stage that names no role never trains one.

Every stage may also implement ``check(ctx)``: a check of its settings against the loaded data
(e.g. enough images per class), run for every stage before the first one starts. Settings alone are
checked when the stage is built (:mod:`distillkit.validation`).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch

from distillkit.errors import UserError


class Stage:
    """What every stage shares: the roles it asks for, and a check against the data."""

    roles: tuple[str, ...] = ()
    key: str = ""  # where its settings sit in the config ("generator"), set when it is built

    def check(self, ctx) -> None:
        """Raise a UserError if this stage cannot run on ``ctx``'s data; called before any stage works."""

    def state_dict(self) -> dict:
        """What a stage carries from one call to the next (a generator's RNG, a buffer…), for a schedule
        that checkpoints between calls (``rounds``); most stages carry nothing."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""


class Generator(Stage):
    makes_images: bool = True  # False: its sets are real training images (the ledger's images_generated skips them)

    def known_smallest_class(self, ctx) -> tuple[int, int] | None:
        """(class, count) of the smallest class of the pool it will make, when that is known before it runs
        (a real pool), so that a sampler short of images fails before scoring; None when it is not."""
        return None

    def __call__(self, ctx):
        """The pool of candidates, or the final set, as a SyntheticSet."""
        raise NotImplementedError


@dataclass
class Scores:
    """One value per pool sample (difficulty, priority…); optionally the real training images' values
    and labels, for samplers that compare the pool with the real data (DGS)."""

    pool: torch.Tensor
    real: torch.Tensor | None = None
    real_labels: torch.Tensor | None = None

    def __post_init__(self):
        if self.pool.ndim != 1:
            raise UserError(f"scores must be one value per sample (got shape {tuple(self.pool.shape)})")
        if (self.real is None) != (self.real_labels is None) or (
                self.real is not None and len(self.real) != len(self.real_labels)):
            raise UserError("real scores need one real label each")


class Scorer(Stage):
    def __call__(self, pool, ctx) -> Scores | None:
        raise NotImplementedError


class Sampler(Stage):
    keeps_ipc_per_class: bool = True  # False: it keeps the whole pool, whatever ipc is

    def __call__(self, pool, scores: Scores | None, ctx) -> torch.Tensor:
        """Indices into ``pool``."""
        raise NotImplementedError

    def weights(self, pool, scores: Scores | None, indices: torch.Tensor, ctx) -> torch.Tensor | None:
        """Per-sample loss weights for the batch ``indices`` this sampler has just drawn (a prioritized
        sampler's importance-sampling corrections), or None; the ``rounds`` schedule hands them to the
        learner as the batch's ``weights``."""
        return None


@dataclass
class Metric:
    """One named number over runs (seeds): its mean, population std and the runs themselves; ``ci`` an
    optional confidence interval of the mean (:class:`distillkit.fairness.Interval` as a dict)."""

    mean: float
    std: float
    runs: list[float]
    ci: dict | None = None

    @classmethod
    def of(cls, runs) -> "Metric":
        runs = [float(r) for r in runs]
        if not runs:
            raise ValueError("a metric needs at least one run")
        return cls(statistics.fmean(runs), statistics.pstdev(runs) if len(runs) > 1 else 0.0, runs)

    def as_dict(self) -> dict:
        return {"mean": self.mean, "std": self.std, "runs": self.runs, **({"ci": self.ci} if self.ci else {})}


@dataclass
class EvalReport:
    """What an evaluator found: named metrics, the primary one (what the final line prints and a
    sweeper optimises) and whether higher is better, plus free-form ``details`` for results.json."""

    metrics: dict[str, Metric]
    primary: str
    higher_is_better: bool = True
    details: dict = field(default_factory=dict)
    unit: str = ""  # of the primary metric, for the final line ("%" for accuracy)

    def __post_init__(self):
        if self.primary not in self.metrics:
            raise ValueError(f"primary metric '{self.primary}' is not among {sorted(self.metrics)}")

    @property
    def primary_metric(self) -> Metric:
        return self.metrics[self.primary]

    def objective(self) -> float:
        """The primary metric's mean: what the Hydra app returns to a sweeper."""
        return self.primary_metric.mean


class Evaluator(Stage):
    """Measures a distilled set (``__call__``) or networks trained by the schedule (``assess``).

    ``primary_metric`` / ``higher_is_better`` are known before anything runs, so a sweeper can be told
    which way to optimise (``conf/hparams_search``).
    """

    primary_metric: str = "accuracy"
    higher_is_better: bool = True
    # False: it measures a set, not networks (the generative evaluator), so the rounds schedule cannot use it
    assesses_networks: bool = True

    @classmethod
    def direction(cls) -> str:
        """``maximize`` or ``minimize``: how a sweeper should treat the primary metric."""
        return "maximize" if cls.higher_is_better else "minimize"

    def __call__(self, distilled, ctx) -> EvalReport:
        raise NotImplementedError

    def assess(self, models: list[torch.nn.Module], ctx) -> EvalReport:
        """Networks trained elsewhere (a ``rounds`` learner's); only when :attr:`assesses_networks`."""
        raise NotImplementedError


class Learner(Stage):
    """A network trained inside the ``rounds`` schedule, batch by batch; resumable through its state
    (:meth:`state_dict` holds the network and its optimiser)."""

    model: torch.nn.Module

    def start(self, ctx) -> None:
        """Build the network (from a role) and its optimiser; called once, after the roles are ready."""
        raise NotImplementedError

    def step(self, batch, ctx) -> torch.Tensor | None:
        """Train on ``batch`` (a SyntheticSet); per-sample feedback for the buffer's scores, or None."""
        raise NotImplementedError
