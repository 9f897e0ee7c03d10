"""Published numbers (``published.yaml``) to print beside measured ones."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from omegaconf import OmegaConf


@lru_cache(maxsize=1)
def _table():
    return OmegaConf.to_container(OmegaConf.load(Path(__file__).with_name("published.yaml")))


def published_number(dataset: str, method: str, ipc: int | None, metric: str = "accuracy"):
    """The published value of ``metric`` for (dataset, method, ipc) — ``all`` for whole-set rows — or None.

    The table's dataset → method → ipc entries are test accuracies; other metrics have no entries yet.
    """
    if metric != "accuracy":
        return None
    row = _table().get(dataset, {}).get(method)
    if not isinstance(row, dict):
        return None
    value = row.get(ipc, row.get("all"))
    return value if isinstance(value, (int, float)) else None
