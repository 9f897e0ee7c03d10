"""The ``experts`` role: expert trajectories, networks trained on the real data whose parameters are kept
after every epoch (MTT's ``buffer.py``; PAD's ``buffer_CL.py`` with an easy-to-hard curriculum).

Each expert is its own cache entry, keyed by what makes it (dataset, model, training settings,
curriculum, seed and index), so

* a sweep or a SLURM array trains the experts in parallel: ``shard.index`` / ``shard.count`` picks
  experts ``index, index + count, …`` and ``schedule.stop_after=prepare`` ends each job with its
  experts; a later run with ``shard.count=1`` finds them all in the cache (the "merge" is the cache
  itself: nothing to join);
* an interrupted expert resumes at its last finished epoch: each epoch's parameters go to
  ``epoch_NNN.safetensors`` in the entry's ``.partial`` folder; when the expert is done they are
  joined into ``trajectory.safetensors``;
* every random draw of an epoch (batch order, DSA) is seeded from (seed, expert index, epoch), so a
  resumed, sharded or unsharded expert is the same tensor.

Optimiser: SGD without momentum at a constant lr (MTT's experts: ``momentum=0``, no decay), so an
epoch needs no optimiser state and resuming is exact. Parameters are flattened in
``named_parameters()`` order (shallow → deep), the order PAD's depth selection relies on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from distillkit.config import model_config
from distillkit.data.augment import DSA
from distillkit.data.synthetic import SyntheticSet
from distillkit.errors import UserError
from distillkit.io import atomic_path
from distillkit.models import ModelSpec
from distillkit.progress import progress
from distillkit.roles import QUALITY_FILE, Role
from distillkit.roles.classifier import accuracy_shortfall, held_out_quality
from distillkit.training import TrainSpec, optimiser_steps, precision, train_classifier, train_settings
from distillkit.validation import (ConfigError, Int, NonNegativeFloat, NonNegativeInt, PositiveFloat,
                                   PositiveInt, build, plain, validated)

log = logging.getLogger("distillkit")

CACHE_KIND = "expert_trajectory"
TRAJECTORY_FILE = "trajectory.safetensors"


def derived_seed(*parts) -> int:
    """A 63-bit seed from any hashable parts (stable across processes, unlike ``hash``)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def flatten_parameters(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).float()


def parameter_layout(model: torch.nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]


class Trajectory:
    """One expert's parameters at epochs 0 (initialisation) … ``epochs``, read row by row from disk."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self.path = Path(path)
        self._file = safe_open(str(self.path), framework="pt")
        self._rows = self._file.get_slice("trajectory")
        self.epochs = self._rows.get_shape()[0] - 1
        self.num_parameters = self._rows.get_shape()[1]

    def parameters_at(self, epoch: int, device) -> torch.Tensor:
        """The flat parameter vector after ``epoch`` epochs (negative counts from the end)."""
        epoch = epoch % (self.epochs + 1)
        return self._rows[epoch:epoch + 1][0].to(device, non_blocking=True)


@dataclass
class Shard:
    """Which experts this job trains: ``index, index + count, …``."""

    index: NonNegativeInt = 0
    count: PositiveInt = 1


class ExpertTrajectories(Role):
    """Trains (or finds in the cache) ``num_experts`` expert trajectories (``conf/role/expert_trajectories.yaml``)."""

    kind = CACHE_KIND

    @validated
    def __init__(self, model: ModelSpec = "convnet", num_experts: PositiveInt = 100, epochs: PositiveInt = 50,
                 lr: PositiveFloat = 0.01, batch_size: PositiveInt = 256, weight_decay: NonNegativeFloat = 0.0,
                 dsa_strategy: str | None = "color_crop_cutout_flip_scale_rotate", amp: bool = True, seed: Int = 0,
                 min_steps_per_epoch: NonNegativeInt = 0, quality_floor: NonNegativeFloat = 2.0,
                 accept_below_floor: bool = False, shard: Shard = Shard(), curriculum: dict | None = None):
        if shard.index >= shard.count:
            raise ConfigError("shard.index", f"must be below shard.count={shard.count} (got {shard.index})")
        self.model, self.num_experts, self.epochs = plain(model), num_experts, epochs
        # an "epoch" of the trajectory: one pass over the data, or more on a small dataset (min_steps_per_epoch)
        self.train_spec = TrainSpec(epochs=1, lr=lr, batch_size=batch_size, optimizer="sgd", momentum=0.0,
                                    weight_decay=weight_decay, schedule="constant", amp=amp, amp_on_cpu=True,
                                    min_steps=min_steps_per_epoch)
        self.quality_floor, self.accept_below_floor = quality_floor, accept_below_floor
        self.dsa_strategy = dsa_strategy if dsa_strategy and dsa_strategy != "none" else None
        self.seed, self.shard_index, self.shard_count = seed, shard.index, shard.count
        self.partial = shard.count > 1
        self.curriculum = self._curriculum(curriculum)

    @staticmethod
    def _curriculum(node):
        """``(scorer, sampler)`` built from ``{scorer, sampler}`` configs, or None."""
        if not node:
            return None
        if set(node) != {"scorer", "sampler"}:
            raise ConfigError("curriculum", f"needs exactly a 'scorer' and a 'sampler' (got {sorted(node)})")
        scorer, sampler = (build(node[k], f"curriculum.{k}") for k in ("scorer", "sampler"))
        if not hasattr(sampler, "indices"):
            raise ConfigError("curriculum.sampler", "must be a curriculum sampler "
                                                    "(sampler@roles.experts.curriculum.sampler=curriculum)")
        return scorer, sampler

    # ---- identity ------------------------------------------------------------------------------
    def precision(self, ctx) -> str:
        return precision(ctx.device, self.train_spec.amp, self.train_spec.amp_on_cpu)

    def settings(self, ctx, index: int = 0) -> dict:
        curriculum = None
        if self.curriculum is not None:
            scorer, sampler = self.curriculum
            curriculum = {"scorer": scorer.settings(ctx), "sampler": sampler.settings()}
        return {"model": plain(model_config(self.model)), "epochs": self.epochs, "train": train_settings(self.train_spec),
                "dsa_strategy": self.dsa_strategy, "curriculum": curriculum, "seed": self.seed, "index": index}

    def expert_spec(self, ctx, index: int) -> dict:
        from distillkit.cache import cache_spec

        return cache_spec(ctx.dataset_identity, self.precision(ctx), **self.settings(ctx, index))

    def shard_members(self) -> list[int]:
        return list(range(self.shard_index, self.num_experts, self.shard_count))

    # ---- the role ------------------------------------------------------------------------------
    def prepare(self, ctx) -> None:
        """Train this shard's missing experts into the cache."""
        members = self.shard_members()
        missing = [i for i in members if ctx.cache.find(CACHE_KIND, self.expert_spec(ctx, i)) is None]
        if missing:
            log.info("training %d expert trajectories (%d epochs each; %d of %d in this shard already cached)",
                     len(missing), self.epochs, len(members) - len(missing), len(members))
        ordered = self._ordered_real(ctx) if missing and self.curriculum is not None else None
        for i in progress(missing, desc="experts"):
            ctx.cache.get_or_create(CACHE_KIND, self.expert_spec(ctx, i),
                                    lambda folder, i=i: self.train_expert(ctx, i, folder, ordered))
        if self.shard_count > 1:
            log.info("expert shard %d/%d done (experts %s)", self.shard_index, self.shard_count, members)

    def materialise(self, ctx) -> tuple[list[Trajectory], dict]:
        """Every expert's trajectory (this shard's trained first) and what the experts measured of
        themselves; an error naming the missing ones."""
        self.prepare(ctx)
        folders = [ctx.cache.find(CACHE_KIND, self.expert_spec(ctx, i)) for i in range(self.num_experts)]
        missing = [i for i, folder in enumerate(folders) if folder is None]
        if missing:
            raise UserError(f"experts {missing} are not in the cache yet: run their shard jobs first "
                            "(roles.experts.shard), or roles.experts.shard.count=1 to train them here")
        each = [json.loads((folder / QUALITY_FILE).read_text()) for folder in folders]
        accuracies = [q["held_out_accuracy"] for q in each]
        quality = {"held_out_accuracy": round(statistics.fmean(accuracies), 2), "lowest": min(accuracies),
                   "experts": len(each), "held_out_images": each[0]["held_out_images"], "chance": each[0]["chance"],
                   "steps_per_epoch": each[0]["steps_per_epoch"], "epochs": self.epochs}
        return [Trajectory(folder / TRAJECTORY_FILE) for folder in folders], quality

    def shortfall(self, quality: dict) -> str | None:
        return accuracy_shortfall(f"the lowest expert's held-out accuracy after {self.epochs} epochs",
                                  quality["lowest"], self.quality_floor, quality["chance"])

    def remedy(self, quality: dict) -> str:
        return (f"train them longer ({self.key}.min_steps_per_epoch, now {quality['steps_per_epoch']} steps per "
                f"epoch, or {self.key}.epochs)")

    def describe(self, quality: dict) -> str:
        return (f"{quality['experts']} expert(s), held-out accuracy after the last epoch {quality['held_out_accuracy']:.1f} %"
                f" (lowest {quality['lowest']:.1f} %) on {quality['held_out_images']} images; {quality['epochs']} epochs "
                f"of {quality['steps_per_epoch']} steps; floor {self.quality_floor * quality['chance']:.1f} %")

    def _ordered_real(self, ctx) -> list[torch.Tensor]:
        scorer, sampler = self.curriculum
        scorer.key = f"{self.key}.curriculum.scorer"
        split = ctx.split
        scores = scorer(SyntheticSet(split.train_images, split.train_labels), ctx)
        return sampler.order(scores.pool, split.train_labels, ctx.data.num_classes)

    def train_expert(self, ctx, index: int, folder: Path, ordered: list[torch.Tensor] | None) -> None:
        """Train expert ``index`` epoch by epoch into ``folder``, resuming after its last finished epoch."""
        from safetensors.torch import load_file, save_file

        devices = [ctx.device] if ctx.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(derived_seed(self.seed, index, "init"))
            model = ctx.build_model(self.model)
        done = 0
        while (folder / f"epoch_{done:03d}.safetensors").is_file():
            done += 1
        if done == 0:
            self._save_epoch(folder, 0, model)
            done = 1
        else:
            flat = load_file(str(folder / f"epoch_{done - 1:03d}.safetensors"))["parameters"].to(ctx.device)
            torch.nn.utils.vector_to_parameters(flat, model.parameters())
            log.info("expert %d: resuming after epoch %d", index, done - 1)
        split = ctx.split
        epochs = progress(range(done - 1, self.epochs), desc=f"expert {index} epochs", total=self.epochs - done + 1)
        for epoch in epochs:
            subset = None if ordered is None else self.curriculum[1].indices(ordered, epoch)
            images = split.train_images if subset is None else split.train_images[subset]
            labels = split.train_labels if subset is None else split.train_labels[subset]
            seed = derived_seed(self.seed, index, epoch)
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                order = torch.Generator(ctx.device).manual_seed(seed)
                augment = DSA(self.dsa_strategy, seed=seed) if self.dsa_strategy else None
                train_classifier(model, images, labels, self.train_spec, augment=augment, generator=order,
                                 desc=f"expert {index} epoch {epoch}")
            self._save_epoch(folder, epoch + 1, model)
            epochs.set_postfix_str(f"epoch {epoch + 1} of {self.epochs} trained on {len(labels)} images")
        rows = [load_file(str(folder / f"epoch_{e:03d}.safetensors"))["parameters"] for e in range(self.epochs + 1)]
        layout = parameter_layout(model)
        with atomic_path(folder / TRAJECTORY_FILE) as tmp:
            save_file({"trajectory": torch.stack(rows)}, str(tmp),
                      metadata={"names": ",".join(n for n, _ in layout),
                                "shapes": ";".join("x".join(map(str, s)) for _, s in layout)})
        for e in range(self.epochs + 1):
            (folder / f"epoch_{e:03d}.safetensors").unlink()
        (folder / QUALITY_FILE).write_text(json.dumps({
            **held_out_quality(model, ctx),
            "steps_per_epoch": optimiser_steps(self.train_spec, len(split.train_labels))}))

    @staticmethod
    def _save_epoch(folder: Path, epoch: int, model: torch.nn.Module) -> None:
        from safetensors.torch import save_file

        with atomic_path(folder / f"epoch_{epoch:03d}.safetensors") as tmp:
            save_file({"parameters": flatten_parameters(model).cpu().contiguous()}, str(tmp))
