"""Regression thresholds for ``distillkit bench SUITE --check FILE``.

The file (``conf/bench/thresholds/smoke.yaml`` is the example the CI uses)::

    tolerance_stds: 2.0     # a cell regresses when it misses its threshold by more than this × its seeds' std …
    min_tolerance: 1.0      # … and by more than this (the metric's unit): a floor for seeds that happen to agree
    cells:                  # <method>/<dataset>/ipc<ipc>: the primary metric's threshold
      dm/digits/ipc10: 85.0 # a floor when higher is better (accuracy), a ceiling when lower is better (FID)

A cell named in the file but missing from the bench (failed or never run) is a regression too.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from distillkit.config import config_dir, group_options
from distillkit.errors import UserError
from distillkit.validation import explain


class Thresholds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tolerance_stds: float = Field(default=2.0, ge=0)
    min_tolerance: float = Field(default=0.0, ge=0)
    cells: dict[str, float] = Field(min_length=1)


def load_thresholds(path: Path) -> Thresholds:
    """A thresholds file by path, or by name from ``conf/bench/thresholds/`` (so an installed wheel has ``smoke``)."""
    if not path.is_file():
        named = config_dir() / "bench" / "thresholds" / f"{path}.yaml"
        if not named.is_file():
            raise UserError(f"{path}: no such thresholds file (named ones: "
                            f"{', '.join(group_options('bench/thresholds'))})")
        path = named
    try:
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        return Thresholds.model_validate(raw or {})
    except ValidationError as err:
        raise UserError(f"{path}: {explain(err)}") from None
    except Exception as err:  # a YAML syntax error
        raise UserError(f"{path}: not a readable thresholds file ({str(err).splitlines()[0]})") from None


def tolerance(std: float, thresholds: Thresholds) -> float:
    return max(thresholds.tolerance_stds * std, thresholds.min_tolerance)


def check(rows, thresholds: Thresholds, expected: list[str]) -> list[str]:
    """One line per regressed cell: measured, threshold, tolerance. ``rows``: :class:`distillkit.report.Row`;
    ``expected``: the cells the bench was asked to run (a threshold on another cell is not checked)."""
    by_cell = {r.cell: r for r in rows}
    lines = []
    for cell, threshold in thresholds.cells.items():
        if cell not in expected:
            continue
        row = by_cell.get(cell)
        if row is None:
            lines.append(f"REGRESSION {cell}: no result (the run failed or stopped before evaluating); "
                         f"threshold {threshold}")
            continue
        slack = tolerance(row.std, thresholds)
        missed = (threshold - row.mean) if row.higher_is_better else (row.mean - threshold)
        if missed > slack:
            side = "below the floor" if row.higher_is_better else "above the ceiling"
            lines.append(f"REGRESSION {cell}: {row.metric} {row.mean:.4g} ± {row.std:.2g} is {side} {threshold:.4g} "
                         f"by {missed:.3g}, more than the tolerance {slack:.3g} "
                         f"(max({thresholds.tolerance_stds} × std, {thresholds.min_tolerance}))")
    return lines
