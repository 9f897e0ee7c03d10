"""Experiment trackers: Weights & Biases (offline unless told otherwise) or none, and :class:`Traced`.

``results.json`` is written by the pipeline whatever the tracker; a tracker only mirrors it. :class:`Traced`
wraps the configured tracker for a run and keeps, of every metric a stage logs at a step (a generator's
matching loss, its learned lr), the first and the last value: ``results.json``'s ``trace``, so a table can show
how an optimisation started and ended from the record alone.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf


class NoTracker:
    """Logs nothing (``tracker=none``)."""

    def start(self, cfg, run_dir: Path) -> None:
        pass

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        pass

    def log_image(self, name: str, path: Path, step: int | None = None) -> None:
        pass

    def log_artifact(self, name: str, kind: str, path: Path) -> None:
        pass

    def finish(self, summary: dict | None = None) -> None:
        pass


class WandbTracker(NoTracker):
    """W&B run with the resolved config; mode ``offline`` by default so it never prompts."""

    def __init__(self, project: str = "distillkit", entity: str | None = None, mode: str | None = None,
                 group: str | None = None, tags=(), name: str | None = None):
        self.project, self.entity, self.group, self.tags, self.name = project, entity, group, list(tags), name
        self.mode = mode or os.environ.get("WANDB_MODE", "offline")
        self.run = None

    def start(self, cfg, run_dir: Path) -> None:
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=self.project, entity=self.entity, mode=self.mode, group=self.group,
                              tags=self.tags, name=self.name, dir=str(run_dir),
                              config=OmegaConf.to_container(cfg, resolve=True), reinit="finish_previous")

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def log_image(self, name: str, path: Path, step: int | None = None) -> None:
        if self.run is not None:
            import wandb
            self.run.log({name: wandb.Image(str(path))}, step=step)

    def log_artifact(self, name: str, kind: str, path: Path) -> None:
        if self.run is not None:
            import wandb
            artifact = wandb.Artifact(name, type=kind)
            artifact.add_file(str(path))
            self.run.log_artifact(artifact)

    def finish(self, summary: dict | None = None) -> None:
        if self.run is not None:
            for key, value in (summary or {}).items():
                self.run.summary[key] = value
            self.run.finish()
            self.run = None


class Traced:
    """The run's tracker, forwarding everything to ``tracker``, that also records ``trace``: for each metric
    logged with a step, ``{first_step, first, last_step, last}`` (a resumed run's first is its first after
    resuming). Metrics logged without a step (final summaries) are forwarded only."""

    def __init__(self, tracker):
        self.tracker = tracker
        self.trace: dict[str, dict] = {}

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        if step is not None:
            for name, value in metrics.items():
                entry = self.trace.setdefault(name, {"first_step": step, "first": float(value)})
                entry.update(last_step=step, last=float(value))
        self.tracker.log_metrics(metrics, step)

    def __getattr__(self, name):  # start, log_image, log_artifact, finish: the wrapped tracker's
        return getattr(self.tracker, name)
