"""What ``conf/hparams_search`` adds to Hydra's Optuna sweeper: its ``optimization_results.yaml`` names
the direction it optimised in (the plugin writes only the best parameters and the best value)."""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


class RecordDirection(Callback):
    """Adds ``direction`` (``maximize`` / ``minimize``, resolved) to the sweep's ``optimization_results.yaml``."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        path = Path(config.hydra.sweep.dir) / "optimization_results.yaml"
        results = OmegaConf.load(path)
        results.direction = config.hydra.sweeper.direction
        OmegaConf.save(results, path)
