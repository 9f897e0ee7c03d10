"""The generator (:class:`DistributionMatching`) and the state of one distillation (:class:`MatchingRun`)."""

from __future__ import annotations

import logging
from typing import Literal

import torch
import torch.nn as nn

from distillkit.checkpoint import resume_mode
from distillkit.config import model_config
from distillkit.data.augment import DSA
from distillkit.data.synthetic import SyntheticSet
from distillkit.errors import UserError
from distillkit.generators.distribution_matching.agent import AgentProbe, parameters_not_reinitialised, reinitialise
from distillkit.generators.distribution_matching.batches import ClassBatches, augment_per_class
from distillkit.generators.distribution_matching.losses import (correlation_loss, diversity_loss, embedding_mean_loss,
                                                                moments_loss)
from distillkit.generators.iterative import IterativeRun
from distillkit.models import ModelSpec
from distillkit.stages import Generator
from distillkit.training import autocast, bf16_applies
from distillkit.validation import (ConfigError, NonNegativeFloat, PositiveFloat, PositiveInt, Resume,
                                   plain, validated)

log = logging.getLogger("distillkit")

TERMS = ("mmd", "moments", "correlation", "diversity")
STYLE_TERMS = ("moments", "correlation")
CHECKPOINT_NAME = "dm_checkpoint.pt"
GRID_FOLDER = "dm_grids"
AUTO_REAL_PER_PASS_GPU = 8192  # real images in one forward pass on a GPU (memory-bound)


class DistributionMatching(Generator):
    """The generator: ``DistributionMatching(...)(ctx)`` returns the distilled set (``ipc`` per class).

    Options mirror ``conf/generator/distribution_matching.yaml``; see ``docs/methods/dm.md``.
    """

    @validated
    def __init__(self, model: ModelSpec = "convnet", iterations: PositiveInt = 20000, batch_real: PositiveInt = 256,
                 lr_img: PositiveFloat = 1.0, momentum: NonNegativeFloat = 0.5, init: Literal["real", "noise"] = "real",
                 dsa_strategy: str | None = "color_crop_cutout_flip_scale_rotate", terms: dict[str, bool] | None = None,
                 style_weight: NonNegativeFloat = 10000.0, moments_weight: NonNegativeFloat = 1.0,
                 diversity_weight: NonNegativeFloat = 10.0, diversity_neighbours: PositiveInt = 2,
                 style_layer: Literal["norm", "relu"] = "norm", max_real_per_pass: Literal["auto"] | PositiveInt = "auto",
                 amp: bool = True, compile: bool = False, log_every: PositiveInt = 50, grid_every: PositiveInt = 500,
                 checkpoint_every: PositiveInt = 250, resume: Resume = "auto", explode_factor: PositiveFloat = 1e4):
        terms = dict(terms) if terms is not None else {"mmd": True}
        unknown = set(terms) - set(TERMS)
        if unknown:
            raise ConfigError("terms", f"unknown {sorted(unknown)} (choose from {', '.join(TERMS)})")
        self.terms = [t for t in TERMS if terms.get(t, False)]
        if not self.terms:
            raise ConfigError("terms", "switch on at least one of " + ", ".join(TERMS))
        self.model = plain(model)
        self.iterations, self.batch_real = iterations, batch_real
        self.lr_img, self.momentum, self.init = lr_img, momentum, init
        self.dsa_strategy = dsa_strategy if dsa_strategy and dsa_strategy != "none" else None
        self.style_weight, self.moments_weight = style_weight, moments_weight
        self.diversity_weight, self.diversity_neighbours = diversity_weight, diversity_neighbours
        self.style_layer, self.max_real_per_pass, self.amp = style_layer, max_real_per_pass, amp
        self.compile = compile
        self.log_every, self.grid_every, self.checkpoint_every = log_every, grid_every, checkpoint_every
        self.resume, self.explode_factor = resume_mode(resume), explode_factor

    def term_weights(self) -> dict:
        """Each switched-on term's factor in the total loss."""
        factor = {"mmd": 1.0, "moments": self.style_weight * self.moments_weight,
                  "correlation": self.style_weight, "diversity": self.diversity_weight}
        return {t: factor[t] for t in self.terms}

    def settings(self, ctx) -> dict:
        """Everything that changes the images; a checkpoint resumes only under the same settings.

        Left out: ``iterations`` (a run may be extended), the logging / grid / checkpoint intervals,
        and ``max_real_per_pass`` (for a network without batch norm it only regroups the same sums).
        """
        model = plain(model_config(self.model))
        return {"dataset": ctx.dataset_identity, "ipc": ctx.ipc, "seed": ctx.seed, "model": model,
                "batch_real": self.batch_real, "lr_img": self.lr_img, "momentum": self.momentum, "init": self.init,
                "dsa_strategy": self.dsa_strategy, "terms": self.term_weights(),
                "diversity_neighbours": self.diversity_neighbours, "style_layer": self.style_layer,
                "amp": self.uses_amp(ctx.device)}

    def uses_amp(self, device: torch.device) -> bool:
        """bf16 autocast: on CUDA, and on CPUs with native bf16 units (AMX / AVX512-BF16)."""
        return bf16_applies(device, self.amp, on_cpu=True)

    def start(self, ctx) -> "MatchingRun":
        """A run positioned at its first iteration (fresh, or where its checkpoint left off)."""
        return MatchingRun(self, ctx)

    def __call__(self, ctx) -> SyntheticSet:
        run = self.start(ctx)
        run.run_to(self.iterations)
        return run.synthetic_set()


class MatchingRun(IterativeRun):
    """The state of one distillation: agent, synthetic images, optimiser, RNG, position, log window."""

    prefix, title = "dm", "distribution matching"
    checkpoint_name, grid_folder = CHECKPOINT_NAME, GRID_FOLDER

    def __init__(self, generator: DistributionMatching, ctx):
        super().__init__(generator, ctx)
        self.num_classes, self.ipc = ctx.data.num_classes, ctx.ipc
        self.agent = ctx.build_model(generator.model)
        uncovered = parameters_not_reinitialised(self.agent)
        if uncovered:
            raise UserError(f"DM redraws its agent in place with reset_parameters, but model '{generator.model}' has "
                            f"parameters no module resets: {', '.join(uncovered[:5])}; pick another generator.model")
        self.agent.requires_grad_(False)
        self.agent.train()  # as the references: batch-norm agents normalise with batch statistics
        style = [t for t in generator.terms if t in STYLE_TERMS]
        self.probe = AgentProbe(self.agent, "moments" in style, "correlation" in style,
                                after_relu=generator.style_layer == "relu", compile=generator.compile)
        if style and not self.probe.layers:
            raise UserError(f"the style terms ({', '.join(style)}) read norm-layer outputs, and agent "
                            f"'{generator.model}' has no norm layers (use an instance-norm ConvNet)")
        if "diversity" in generator.terms and self.ipc == 1:
            log.warning("dm: the diversity term has no neighbours to push away from at ipc=1; it is zero")
        self.weights = torch.tensor(list(generator.term_weights().values()), device=self.device)

        self.real_images = ctx.train_images
        self.sampler = ClassBatches(ctx.train_labels, self.num_classes)
        if self.sampler.smallest == 0:
            raise UserError(f"class {self.sampler.counts.index(0)} has no training images to match")
        self.batch_real = min(generator.batch_real, self.sampler.smallest)
        if self.batch_real < generator.batch_real:
            log.info("dm: batch_real %d -> %d (the smallest class has %d images)", generator.batch_real,
                     self.batch_real, self.sampler.smallest)
        self.class_groups = self._class_groups()

        self.labels = torch.arange(self.num_classes, device=self.device).repeat_interleave(self.ipc)
        self.images = torch.zeros(self.num_classes * self.ipc, *self.real_images.shape[1:], device=self.device,
                                  requires_grad=True)
        self.optimizer = torch.optim.SGD([self.images], lr=generator.lr_img, momentum=generator.momentum)
        self.window = torch.zeros(len(generator.terms) + 1, device=self.device)  # term sums, then the total
        self.window_steps = 0
        if not self.resume():
            self._initialise()

    # ---- set-up ------------------------------------------------------------------------------
    def _class_groups(self) -> list[slice]:
        """Classes that share one forward pass.

        Without batch norm every sample is processed on its own, so grouping classes is exact and
        only memory (on a GPU) or the cache (on a CPU) bounds it. Batch norm normalises with the statistics of the whole pass, so the
        grouping would change the result: such agents see every class in one pass (real and
        synthetic images in separate passes), as the reference's ConvNetBN branch does.
        """
        mixes_samples = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.agent.modules())
        if mixes_samples:
            return [slice(0, self.num_classes)]
        real_per_pass = self.gen.max_real_per_pass
        if real_per_pass == "auto":
            # On a CPU one class per pass: it was no slower than all classes in one pass in our
            # timings (docs/methods/dm.md) and holds a tenth of the activations.
            real_per_pass = self.batch_real if self.device.type == "cpu" else AUTO_REAL_PER_PASS_GPU
        per_pass = max(1, real_per_pass // self.batch_real)
        return [slice(start, min(start + per_pass, self.num_classes))
                for start in range(0, self.num_classes, per_pass)]

    def _initialise(self) -> None:
        torch.manual_seed(self.ctx.seed)
        with torch.no_grad():
            if self.gen.init == "real":
                if self.sampler.smallest < self.ipc:
                    raise UserError(f"init=real needs ipc={self.ipc} real images in every class; the smallest "
                                    f"class has {self.sampler.smallest} (use generator.init=noise or a lower ipc)")
                self.images.copy_(self.real_images[self.sampler.draw(self.ipc).flatten()])
            else:
                self.images.normal_()

    def checkpoint_state(self) -> dict:
        rng = {"cpu": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return {"images": self.images.detach().cpu(), "optimizer": self.optimizer.state_dict(), "rng": rng}

    def load_checkpoint_state(self, state: dict) -> None:
        with torch.no_grad():
            self.images.copy_(state["images"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["cpu"])
        if self.device.type == "cuda" and "cuda" in state["rng"]:
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)

    # ---- the iteration -----------------------------------------------------------------------
    def step(self) -> None:
        """One pixel update: a fresh agent, fresh real batches, every class matched once."""
        reinitialise(self.agent)
        # The op choice is seeded from torch's CPU generator so that a checkpoint's RNG state covers it.
        augment = DSA(self.gen.dsa_strategy, seed=int(torch.randint(2**31 - 1, ()))) if self.gen.dsa_strategy else None
        real_index = self.sampler.draw(self.batch_real)
        self.optimizer.zero_grad(set_to_none=True)
        for classes in self.class_groups:
            groups = classes.stop - classes.start
            real = self.real_images[real_index[classes].flatten()]
            syn = self.images[classes.start * self.ipc:classes.stop * self.ipc]
            if augment is not None:
                real, syn = augment_per_class(augment, real, syn, groups)
            terms = self.matching_terms(real, syn, groups)
            total = (terms * self.weights).sum()
            total.backward()  # per group of classes: the sum over classes accumulates in images.grad
            self.window += torch.cat([terms.detach(), total.detach().reshape(1)])
        self.optimizer.step()
        self.iteration += 1
        self.window_steps += 1

    def matching_terms(self, real: torch.Tensor, syn: torch.Tensor, groups: int) -> torch.Tensor:
        """The switched-on terms (in ``TERMS`` order) for ``groups`` classes of real and synthetic images."""
        with torch.no_grad():
            with autocast(self.device, self.gen.amp, on_cpu=True):
                real_embeddings, real_maps = self.probe(real)
            real_style = self.probe.statistics(real_maps, groups)
            del real_maps
        real_mean = real_embeddings.float().unflatten(0, (groups, -1)).mean(1)
        with autocast(self.device, self.gen.amp, on_cpu=True):
            syn_embeddings, syn_maps = self.probe(syn)
        syn_style = self.probe.statistics(syn_maps, groups)
        syn_embeddings = syn_embeddings.float().unflatten(0, (groups, -1))
        compute = {
            "mmd": lambda: embedding_mean_loss(real_mean, syn_embeddings),
            "moments": lambda: moments_loss(syn_style, real_style),
            "correlation": lambda: correlation_loss(syn_style, real_style),
            "diversity": lambda: diversity_loss(syn_embeddings, self.gen.diversity_neighbours),
        }
        return torch.stack([compute[t]() for t in self.gen.terms])

    # ---- the loop, logging, grids, checkpoints ------------------------------------------------
    def run_to(self, iterations: int) -> None:
        super().run_to(iterations, description=f"dm ({'+'.join(self.gen.terms)})")

    def report(self) -> str:
        """Read the window's mean losses (the only host sync), check for divergence, log them."""
        means = self.window / max(1, self.window_steps)
        values = torch.cat([means, self.images.detach().abs().amax().reshape(1)]).tolist()
        self.window.zero_()
        self.window_steps = 0
        *term_values, total, max_pixel = values
        named = dict(zip(self.gen.terms, term_values))
        weights = self.gen.term_weights()
        # The diversity term is unbounded below by design; explosion is judged on the matching part.
        matching = sum(weights[t] * v for t, v in named.items() if t != "diversity")
        self.check_divergence({"loss": total, **named, "largest |pixel|": max_pixel}, matching,
                              remedy="lower generator.lr_img")
        metrics = {"dm/loss": total, **{f"dm/{t}": v for t, v in named.items()}, "dm/max_abs_pixel": max_pixel}
        self.ctx.tracker.log_metrics(metrics, step=self.iteration)
        text = f"loss {total:.4g} (" + ", ".join(f"{t} {v:.4g}" for t, v in named.items()) + ")"
        log.info("dm iteration %d/%d: %s", self.iteration, self.gen.iterations, text)
        return text

    def synthetic_set(self) -> SyntheticSet:
        """The synthetic images as they are now (detached, on the CPU) with their labels."""
        return SyntheticSet(self.images.detach().cpu().clone(), self.labels.cpu(),
                            meta={"source": "distribution_matching"})
