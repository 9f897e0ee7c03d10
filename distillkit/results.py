"""``results.json`` and the final line, built in one place for ``distillkit run`` and ``distillkit eval``.

The contract: ``method``, ``dataset``, ``ipc``, ``status``, ``metrics`` (every named metric as
``{mean, std, runs}``), ``primary_metric`` (``{name, higher_is_better, unit}``), ``accuracy`` at the
top level whenever the evaluator reports it, the evaluator's details (``per_model``, ``labels``,
``eval_lr``…), ``published``, ``roles`` (what each trained role measured of itself), ``seconds`` per
phase, and the device. ``run`` adds ``budget``, ``seed``, the set's size, ``trace`` (the first and last value of every metric a stage
logged at a step: :class:`~distillkit.tracking.Traced`) and the resolved config;
``eval`` adds the set's path and the evaluator's config. Both add ``cost``, the cost ledger
(:mod:`distillkit.ledger`), ``test_set_readers`` (what opened the sealed test split:
:meth:`~distillkit.context.Context.final_evaluation`) and the evaluator's ``selection`` (which checkpoint
was reported).
"""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import torch

from distillkit.malloc import MALLOC
from distillkit.published import published_number
from distillkit.stages import EvalReport

# keys of a resolved config that say where and how a run is logged, not what it computes
NOT_FINGERPRINTED = ("tracker", "cache")


def fingerprint(config: dict) -> str:
    """What a finished run's numbers depend on: its resolved config (as results.json stores it) less where it is
    logged and cached. ``distillkit bench`` skips a cell whose stored run has its fingerprint; ``report`` joins
    runs whose configs less the seed share one."""
    kept = {k: v for k, v in config.items() if k not in NOT_FINGERPRINTED}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def results(*, method: str, dataset: str, ipc, status: str, report: EvalReport | None, roles: dict,
            seconds: dict, device: torch.device, published_as: str | None = None, **extra) -> dict:
    """The results dict; ``extra`` keys (budget, seed, config, source…) follow the shared ones.
    ``published_as``: the method's name in the published table (``full`` is ``whole``), None for no lookup."""
    payload = {"method": method, "dataset": dataset, "ipc": ipc, "status": status}
    if report is not None:
        metrics = {name: metric.as_dict() for name, metric in report.metrics.items()}
        if "accuracy" in metrics:  # a public contract older than named metrics
            payload["accuracy"] = metrics["accuracy"]
        payload.update({"metrics": metrics, "primary_metric": {"name": report.primary,
                        "higher_is_better": report.higher_is_better, "unit": report.unit}, **report.details,
                        "published": published_as and published_number(dataset, published_as, ipc, report.primary)})
    payload.update({"roles": roles, "seconds": seconds, "device": str(device), "device_name": device_name(device),
                    "torch": torch.__version__, "malloc": MALLOC, **extra})
    return payload


def objective(payload: dict) -> float | None:
    """The primary metric's mean (what a sweeper optimises), or None for a run that stopped before evaluating."""
    primary = payload.get("primary_metric")
    return payload["metrics"][primary["name"]]["mean"] if primary else None


def result_line(payload: dict, where: Path) -> str:
    """One line: the primary metric as mean ± std over its runs, the published number beside it, and where."""
    head = f"{payload['method']} {payload['dataset']} ipc={payload['ipc']}"
    primary = payload.get("primary_metric")
    if not primary:
        return f"{head}: {payload['status']} -> {where}"
    metric = payload["metrics"][primary["name"]]
    unit = f" {primary['unit']}" if primary["unit"] else ""
    direction = "" if primary["higher_is_better"] else " (lower is better)"
    published = f" (published {payload['published']:.1f})" if payload.get("published") is not None else ""
    selection = payload.get("selection", "final")
    selected = "" if selection.startswith("final") else f" [checkpoint {selection}]"
    # percentages to two decimals; other metrics (an FID in small features may be 0.03) to four significant digits
    digits = ".2f" if primary["unit"] == "%" else ".4g"
    return (f"{head}: {primary['name']} {metric['mean']:{digits}} ± {metric['std']:{digits}}{unit} over "
            f"{len(metric['runs'])} run(s){direction}{selected}{published} -> {where}")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
