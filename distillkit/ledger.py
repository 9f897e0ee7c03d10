"""The cost ledger: what a run spent, beside what it measured — ``results.json``'s ``cost``, one summary line
after the final line, and ``cost/…`` metrics in W&B.

* ``seconds`` — wall-clock per stage (the schedule's phases: data, roles, generator, scorer, sampler,
  evaluator, or rounds), and their ``total``;
* ``peak_rss_mib`` — the process's peak resident memory (``getrusage``; the whole process, data included);
* ``cuda_max_allocated_mib`` — ``torch.cuda.max_memory_allocated`` on a CUDA device, else None;
* ``distilled_set_bytes`` — the saved set's file (images, labels, soft labels, lr and header), as written;
* ``teacher_forward_passes`` / ``teacher_images_forwarded`` — forward passes (batches) of the ``teacher`` role's
  network in this run, and the images they carried (a hook on the role's network, embeddings included; a score
  read from the cache costs none);
  every other network role's count is in ``role_forward_passes``;
* ``images_generated`` — images a generator made (its sets' sizes; the ``rounds`` schedule's every batch;
  a diffusion pool read from the cache counts, it was generated for this set); 0 for real-image pools.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import torch

MIB = 2 ** 20


class ForwardCounter:
    """Counts a network's forward passes and the images they carried, by a hook on its first layer with
    weights — which logits and embeddings (``model.embed``, herding's and k-center's) both pass through."""

    def __init__(self, module: torch.nn.Module):
        self.calls = 0
        self.images = 0
        entry = next((m for m in module.modules() if not any(True for _ in m.children())
                      and any(True for _ in m.parameters(recurse=False))), module)
        self.handle = entry.register_forward_pre_hook(self)

    def __call__(self, module, args) -> None:
        self.calls += 1
        if args and torch.is_tensor(args[0]):
            self.images += len(args[0])


def peak_rss_mib() -> float:
    """The process's peak resident set size in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (MIB if sys.platform == "darwin" else 1024), 1)


def cuda_max_allocated_mib(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / MIB, 1)


def cost(*, seconds: dict, forwards: dict[str, ForwardCounter], device: torch.device, set_file: Path | None,
         images_generated: int) -> dict:
    """The ledger of a run (module docstring); ``forwards``: the network roles' counters (:class:`Roles`)."""
    teacher = forwards.get("teacher")
    set_file = Path(set_file) if set_file is not None else None
    return {"seconds": {**seconds, "total": round(sum(seconds.values()), 3)},
            "peak_rss_mib": peak_rss_mib(), "cuda_max_allocated_mib": cuda_max_allocated_mib(device),
            "distilled_set_bytes": set_file.stat().st_size if set_file is not None and set_file.is_file() else None,
            "teacher_forward_passes": teacher.calls if teacher else 0,
            "teacher_images_forwarded": teacher.images if teacher else 0,
            "role_forward_passes": {name: counter.calls for name, counter in forwards.items()},
            "images_generated": int(images_generated)}


def cost_line(payload: dict) -> str:
    """The ledger as one line (printed after the final line)."""
    c = payload["cost"]
    stages = ", ".join(f"{k} {v:.1f}" for k, v in c["seconds"].items() if k != "total")
    cuda = f", CUDA max allocated {c['cuda_max_allocated_mib']:.0f} MiB" if c["cuda_max_allocated_mib"] is not None \
        else ""
    size = f"{c['distilled_set_bytes'] / 1024:.1f} KiB" if c["distilled_set_bytes"] is not None else "not saved"
    return (f"cost: {c['seconds']['total']:.1f} s ({stages}); peak RSS {c['peak_rss_mib']:.0f} MiB{cuda}; "
            f"set {size}; teacher forward passes {c['teacher_forward_passes']} "
            f"({c['teacher_images_forwarded']} images); images generated {c['images_generated']}")


def as_metrics(ledger: dict) -> dict:
    """The ledger's numbers, flat, for a tracker (``cost/seconds/evaluator``, ``cost/peak_rss_mib``…)."""
    flat = {}
    for key, value in ledger.items():
        if isinstance(value, dict):
            flat.update({f"cost/{key}/{k}": v for k, v in value.items()})
        elif value is not None:
            flat[f"cost/{key}"] = value
    return flat
