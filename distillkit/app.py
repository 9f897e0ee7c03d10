"""The Hydra application behind ``distillkit run``."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from distillkit.config import config_dir
from distillkit.errors import UserError


@hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")
def hydra_app(cfg: DictConfig) -> float:
    from distillkit.ledger import cost_line
    from distillkit.results import objective, result_line
    from distillkit.run import execute

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        results = execute(cfg, run_dir)
    except UserError as err:
        print(f"distillkit: error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        # A new run gets a new time-stamped directory: say which one holds the checkpoints.
        print(f"distillkit: interrupted; to continue from its checkpoints, rerun with hydra.run.dir={run_dir}",
              file=sys.stderr)
        sys.exit(130)
    print(result_line(results, run_dir), flush=True)
    print(cost_line(results), flush=True)
    return objective(results)  # the primary metric: what a sweeper (e.g. Optuna) optimises
