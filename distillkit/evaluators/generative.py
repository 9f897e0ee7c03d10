"""Generative evaluation (D2C): how well a diffusion model trained on the distilled set models the real data.

Any method's set works (images and hard labels; soft labels are ignored). For each seed, a fresh
class-conditional denoiser (:mod:`distillkit.diffusion`, with label dropout for classifier-free guidance) trains
on the set — ``denoiser``: the pixel UNet, or a DiT on pixels or on a VAE's latents (D2C's DiT-L/2 on SD-VAE
latents); at every length in ``eval_at_steps`` — milestones of one training run — it samples
``samples_per_class`` images per class (DDIM, guidance ``guidance_scale``; the same noise at every length, so
lengths differ by the model only) and measures them:

* ``fid_held_out`` — FID against the real **test split**: images that neither the method (it selects from
  the training images, the held-out part of ``validation:`` included), the UNet nor the judge ever saw, and
  the largest unseen set there is. Lower is better; the primary metric (at the longest length).
* ``fid_train`` — FID against the real **training images** the set was made from. Far below
  ``fid_held_out``: the model reproduces the training images rather than the data (copying pays here).
* ``generated_accuracy`` — % of samples that the ``judge`` role (a classifier trained on the real data that
  no method selects with) classifies as the class they were generated for.
* ``copy_rate`` — the share of samples whose nearest training image (the real training images and the
  distilled set, Euclidean distance in pixels in [-1, 1]) is closer than ``copy_threshold`` × the median
  nearest-training-image distance of real test images (``copy_reference_images`` of them). Real unseen
  images score about 0 (their own rate is in ``details``), copies 1.

FID features (``fid_features``): ``classifier`` — the judge's last feature map averaged over space (as
Inception's pool3 features are), which needs no download; ``inception`` — torchmetrics' Inception-v3 (needs
the torch-fidelity package and its weights, a download, or ``inception_weights``). ``details.fid_features``
says which produced the numbers.

Attach (``attach:``, D2C; :mod:`distillkit.diffusion.attach`): the UNet may train with a DC-Embedding of the
class caption as its class conditioning and REPA's alignment of one block with a frozen encoder's features
(``method=d2c`` and ``d2c_attach_only`` turn both on); ``details.attach`` says which encoders were used.

Metrics are named ``<metric>@<steps>`` per length and ``<metric>`` at the longest. Each finished (seed,
length) goes to ``run_dir/generative_progress.json`` at once and the UNet checkpoints as it trains (in
``run_dir/generative_training/``), so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from distillkit.checkpoint import EvalProgress
from distillkit.data.synthetic import SyntheticSet
from distillkit.diffusion.attach import Attach, AttachSettings
from distillkit.diffusion.denoisers import DiTSettings, UNetSettings, dit_blocks, unet_blocks
from distillkit.diffusion.pixels import to_channels, to_model_space
from distillkit.diffusion.spaces import load_vae
from distillkit.diffusion.training import DenoiserTraining
from distillkit.errors import DivergedError, UserError
from distillkit.plots import save_grid
from distillkit.roles.diffusion import untrained_local_diffusion
from distillkit.stages import EvalReport, Evaluator, Metric
from distillkit.training import predict
from distillkit.validation import ConfigError, Int, PositiveFloat, PositiveInt, validated

log = logging.getLogger("distillkit")

PROGRESS_NAME = "generative_progress.json"
TRAINING_FOLDER = "generative_training"
METRICS = ("fid_held_out", "fid_train", "generated_accuracy", "copy_rate")
JUDGE = "judge"


class GenerativeEvaluator(Evaluator):
    """Options mirror ``conf/evaluator/generative.yaml``."""

    primary_metric = "fid_held_out"
    higher_is_better = False
    assesses_networks = False
    roles = (JUDGE,)

    @validated
    def __init__(self, eval_at_steps: list[PositiveInt] = (500, 1000), samples_per_class: PositiveInt = 50,
                 guidance_scale: PositiveFloat = 2.0, sampling_steps: PositiveInt = 25,
                 fid_features: Literal["classifier", "inception"] = "classifier", inception_weights: str | None = None,
                 copy_threshold: PositiveFloat = 0.5, copy_reference_images: PositiveInt = 1000,
                 min_images_per_class: PositiveInt = 1, num_seeds: PositiveInt = 3, seed: Int = 0, amp: bool = True,
                 denoiser: Literal["unet", "dit"] = "unet", unet: UNetSettings = UNetSettings(),
                 dit: DiTSettings = DiTSettings(), train: DenoiserTraining = DenoiserTraining(),
                 attach: AttachSettings = AttachSettings(), batch_size: PositiveInt = 256):
        if not eval_at_steps:
            raise ConfigError("eval_at_steps", "needs at least one training length")
        self.lengths = sorted(set(eval_at_steps))
        self.samples_per_class, self.guidance_scale = samples_per_class, guidance_scale
        self.sampling_steps = sampling_steps
        self.fid_features, self.inception_weights = fid_features, inception_weights
        self.copy_threshold, self.copy_reference_images = copy_threshold, copy_reference_images
        self.min_images_per_class, self.num_seeds, self.seed, self.amp = min_images_per_class, num_seeds, seed, amp
        self.unet_cfg = {**vars(unet), "channel_mult": list(unet.channel_mult)}
        self.dit_cfg = dict(vars(dit)) if denoiser == "dit" else None
        self.train_cfg = {**vars(train), "steps": self.lengths[-1]}
        self.batch_size = batch_size
        blocks = unet_blocks(len(unet.channel_mult)) if denoiser == "unet" else dit_blocks(dit.depth)
        self.attach = Attach(attach, blocks)
        self._vae: nn.Module | None = None
        self.roles = (JUDGE, *self.attach.roles)
        self._inception: nn.Module | None = None

    # ---- before anything runs ------------------------------------------------------------------------
    def check(self, ctx) -> None:  # keys in full: a check's errors are not prefixed with the stage's key
        if self.samples_per_class * ctx.data.num_classes < 2:
            raise ConfigError(f"{self.key}.samples_per_class", "FID needs at least two generated images")
        if self.fid_features == "inception":
            self.inception_network()  # a missing package or download fails now, not after distillation
        if self.uses_vae:
            self.vae(ctx)  # so does a VAE that cannot load
        self.attach.key = f"{self.key}.attach"
        self.attach.check(ctx)  # so do missing encoder weights

    def inception_network(self) -> nn.Module:
        """torchmetrics' FID Inception-v3 (torch-fidelity's port), built once; one ConfigError line if it cannot be."""
        if self._inception is None:
            try:
                from torchmetrics.image.fid import FrechetInceptionDistance

                fid = FrechetInceptionDistance(feature=2048, feature_extractor_weights_path=self.inception_weights)
            except Exception as err:  # no torch-fidelity, no network for the weights, a bad weights file
                reason = (str(err).splitlines() or [type(err).__name__])[0]
                raise ConfigError(f"{self.key}.fid_features", "inception: cannot build torchmetrics' Inception feature "
                                  f"extractor ({reason}); it needs the torch-fidelity package and its weights "
                                  "(downloaded once, or evaluator.inception_weights=<file>); without them use "
                                  "evaluator.fid_features=classifier") from None
            self._inception = fid.inception
        return self._inception

    @property
    def uses_vae(self) -> bool:
        return self.dit_cfg is not None and self.dit_cfg["latents"] == "vae"

    def vae(self, ctx) -> nn.Module | None:
        """The frozen VAE of ``dit.latents=vae`` (loaded once), else None."""
        if self.uses_vae and self._vae is None:
            try:
                self._vae = load_vae(self.dit_cfg["vae"], ctx.device)
            except UserError as err:
                raise ConfigError(f"{self.key}.dit.vae", f"{err} ({self.key}.dit.vae=<folder>), or use "
                                  f"{self.key}.dit.latents=pixels") from None
        return self._vae

    def denoiser_settings(self) -> dict:
        """What the trained denoiser is (fingerprints, details)."""
        return {"unet": self.unet_cfg} if self.dit_cfg is None else {"dit": self.dit_cfg}

    def check_classes(self, labels: torch.Tensor, ctx) -> None:
        counts = torch.bincount(labels.cpu(), minlength=ctx.data.num_classes).tolist()
        small = [f"{c} ({n})" for c, n in enumerate(counts) if n < self.min_images_per_class]
        if small:
            raise UserError(f"the generative evaluator needs at least {self.min_images_per_class} image(s) of every "
                            f"class in the distilled set (evaluator.min_images_per_class); class(es) "
                            f"{', '.join(small)} have fewer: a class-conditional model cannot learn a class it "
                            "does not see")

    # ---- the evaluation ------------------------------------------------------------------------------
    def fingerprint(self, images: torch.Tensor, labels: torch.Tensor, ctx) -> str:
        """What a finished (seed, length) depends on besides the seed: the set, the protocol, the data, the judge."""
        digest = hashlib.sha256()
        for tensor in (images, labels):
            digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
        judge = ctx.roles.role(JUDGE)
        protocol = (self.denoiser_settings(), self.train_cfg, self.samples_per_class, self.guidance_scale,
                    self.sampling_steps, self.fid_features, self.inception_weights, self.copy_threshold,
                    self.copy_reference_images,
                    str(ctx.device), ctx.dataset_identity, judge.spec(ctx), getattr(judge, "weights", None),
                    self.attach.settings(), *(ctx.roles.role(name).spec(ctx) for name in self.attach.roles))
        digest.update(repr(protocol).encode())
        return digest.hexdigest()

    def __call__(self, distilled, ctx) -> EvalReport:
        distilled = distilled.to(ctx.device)
        images, labels = distilled.images.detach().float(), distilled.labels
        self.check_classes(labels, ctx)
        fingerprint = self.fingerprint(images, labels, ctx)
        progress = EvalProgress(ctx.run_dir, PROGRESS_NAME, fingerprint)
        started = time.perf_counter()
        with ctx.final_evaluation(f"{type(self).__name__}: test-split references (FID, copy threshold)"):
            references = RealReferences(self, images, ctx)  # statistics only: nothing selects on them
        seconds = {"references": time.perf_counter() - started}
        with TrainingFolder(ctx.run_dir) as folder:
            per_seed = [self.evaluate_seed(s, images, labels, references, progress, folder / fingerprint[:16], ctx)
                        for s in range(self.seed, self.seed + self.num_seeds)]
        for results in per_seed:
            for result in results.values():
                for phase, value in result["seconds"].items():
                    seconds[phase] = seconds.get(phase, 0.0) + value
        report = self.report(per_seed, references, {k: round(v, 3) for k, v in seconds.items()})
        if self.attach.enabled:
            report.details["attach"] = self.attach.describe(ctx)
        return report

    def evaluate_seed(self, s: int, images, labels, references: "RealReferences", progress: EvalProgress,
                      folder: Path, ctx) -> dict[int, dict]:
        """``{length: measures}`` of seed ``s``: finished lengths from ``progress``, the others trained and measured."""
        results = {length: progress.get(progress_key(length), s) for length in self.lengths}
        if all(r is not None for r in results.values()):
            log.info("generative eval seed %d: finished before the interruption (%s)", s, PROGRESS_NAME)
            shutil.rmtree(folder / f"seed{s}", ignore_errors=True)
            return results
        torch.manual_seed(s)
        model = untrained_local_diffusion(self.unet_cfg, self.train_cfg, ctx.data, self.amp, ctx.device,
                                          dit_cfg=self.dit_cfg, vae=self.vae(ctx))
        clock = {"since": time.perf_counter()}

        def at_milestone(length: int) -> None:
            trained = time.perf_counter() - clock["since"]
            if results[length] is None:
                results[length] = self.measure(model, s, length, references, ctx)
                results[length]["seconds"]["train"] = round(trained, 3)
                progress.record(progress_key(length), s, results[length])
                log.info("generative eval seed %d at %d steps: %s", s, length, ", ".join(
                    f"{name} {results[length][name]:.4g}" for name in METRICS))
            clock["since"] = time.perf_counter()

        extra_losses = self.attach.apply(model.denoiser, model.inputs(images), images, ctx)
        model.fit(images, labels, folder / f"seed{s}", s, extra_losses=extra_losses, milestones=self.lengths,
                  at_milestone=at_milestone)
        shutil.rmtree(folder / f"seed{s}", ignore_errors=True)  # the UNet is not kept: its numbers are
        return results

    def measure(self, model, s: int, length: int, references: "RealReferences", ctx) -> dict:
        """Sample ``samples_per_class`` images per class from ``model`` and measure them."""
        seconds = {}
        start = time.perf_counter()
        wanted = torch.arange(ctx.data.num_classes, device=ctx.device).repeat_interleave(self.samples_per_class)
        noise = torch.Generator(ctx.device).manual_seed(s)  # the same draws at every length
        generated = torch.cat([model.generate(chunk, self.guidance_scale, self.sampling_steps, noise)
                               for chunk in wanted.split(self.batch_size)])
        if not torch.isfinite(generated).all():
            raise DivergedError(f"the UNet trained on the distilled set generated NaN or infinite pixels after "
                                f"{length} steps; lower evaluator.train.lr")
        seconds["sample"] = time.perf_counter() - start
        if ctx.run_dir is not None and s == self.seed and length == self.lengths[-1]:
            save_grid(SyntheticSet(generated, wanted), ctx.data, Path(ctx.run_dir) / "generated_grid.png")
        start = time.perf_counter()
        measures = {"fid_held_out": references.fid_held_out(generated), "fid_train": references.fid_train(generated)}
        seconds["fid"] = time.perf_counter() - start
        start = time.perf_counter()
        judged = predict(references.judge, generated, self.batch_size).argmax(1)
        measures["generated_accuracy"] = 100.0 * (judged == wanted).sum().item() / len(wanted)
        seconds["accuracy"] = time.perf_counter() - start
        start = time.perf_counter()
        measures["copy_rate"] = references.copy_rate(generated)
        seconds["copy_rate"] = time.perf_counter() - start
        return {**measures, "seconds": {k: round(v, 3) for k, v in seconds.items()}}

    def report(self, per_seed: list[dict[int, dict]], references: "RealReferences", seconds: dict) -> EvalReport:
        metrics = {f"{name}@{length}": Metric.of([results[length][name] for results in per_seed])
                   for length in self.lengths for name in METRICS}
        metrics.update({name: metrics[f"{name}@{self.lengths[-1]}"] for name in METRICS})
        details = {"fid_features": references.extractor_description, "train_steps": self.lengths[-1],
                   "generative": {"denoiser": self.denoiser_settings(), "eval_at_steps": self.lengths,
                                  "samples_per_class": self.samples_per_class, "guidance_scale": self.guidance_scale,
                                  "sampling_steps": self.sampling_steps,
                                  "fid_reference": references.fid_reference, "copy_rule": references.copy_rule,
                                  "real_reference": references.real, "seconds": seconds}}
        return EvalReport(metrics, self.primary_metric, self.higher_is_better, details)

    def assess(self, models, ctx) -> EvalReport:
        raise UserError("the generative evaluator measures a distilled set, not trained networks (evaluator=classifier "
                        "does)")


def progress_key(length: int) -> str:
    """A length's name in the progress file (its seeds follow: ``generative@1000/0``)."""
    return f"generative@{length}"


class TrainingFolder:
    """Where the UNets train: ``run_dir/generative_training`` (kept across an interruption, removed when the
    evaluation ends), or a temporary folder for a run without a folder."""

    def __init__(self, run_dir: Path | None):
        self.temporary = tempfile.TemporaryDirectory(prefix="distillkit-generative-") if run_dir is None else None
        self.path = Path(self.temporary.name) if self.temporary else Path(run_dir) / TRAINING_FOLDER

    def __enter__(self) -> Path:
        return self.path

    def __exit__(self, kind, *rest) -> None:
        if self.temporary:
            self.temporary.cleanup()
        elif kind is None:
            shutil.rmtree(self.path, ignore_errors=True)


# ---- the measures ----------------------------------------------------------------------------------

class JudgeFeatures(nn.Module):
    """A classifier's last feature map averaged over space (global average pooling, as Inception's pool3
    features for FID): ``num_features`` numbers per image, whatever the image size. Takes images in the
    dataset's normalised space."""

    def __init__(self, classifier: nn.Module, example: torch.Tensor):
        super().__init__()
        self.classifier = classifier
        self.num_features = self(example[:1]).shape[1]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not hasattr(self.classifier, "features"):  # a timm model: its pooled pre-logits
            return self.classifier.embed(images).float()
        maps = self.classifier.features(images).float()
        return maps.mean((2, 3)) if maps.ndim == 4 else maps.flatten(1)


class InceptionFeatures(nn.Module):
    """torchmetrics' FID Inception-v3 (2048 pool3 features) on images in the dataset's normalised space: back to
    8-bit RGB pixels (grey repeated), which the network resizes to 299×299 itself."""

    num_features = 2048

    def __init__(self, inception: nn.Module, data):
        super().__init__()
        self.inception, self.data = inception, data

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = to_channels((to_model_space(images, self.data) + 1) / 2, 3)
        return self.inception((pixels * 255).round().to(torch.uint8)).float()


class FrechetDistance:
    """FID of image sets against one real set, whose statistics are computed once (torchmetrics'
    ``FrechetInceptionDistance`` with a feature extractor module, real features kept between sets)."""

    def __init__(self, features: nn.Module, real: torch.Tensor, batch_size: int):
        from torchmetrics.image.fid import FrechetInceptionDistance

        self.batch_size = batch_size
        self.metric = FrechetInceptionDistance(feature=features, reset_real_features=False).to(real.device)
        for chunk in real.split(batch_size):
            self.metric.update(chunk, real=True)

    def __call__(self, images: torch.Tensor) -> float:
        self.metric.reset()  # the generated side only
        for chunk in images.split(self.batch_size):
            self.metric.update(chunk, real=False)
        return float(self.metric.compute())


def nearest_distances(queries: torch.Tensor, references: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Per query image, the Euclidean distance to its nearest reference image (flattened pixels)."""
    refs = references.flatten(1).float()
    return torch.cat([torch.cdist(chunk, refs).amin(1) for chunk in queries.flatten(1).float().split(batch_size)])


def copy_rate(samples: torch.Tensor, training: torch.Tensor, threshold: float) -> float:
    """The share of ``samples`` whose nearest ``training`` image is closer than ``threshold`` (pixels)."""
    return (nearest_distances(samples, training) < threshold).float().mean().item()


class RealReferences:
    """What every seed's samples are compared with, computed once per evaluation: FID statistics of the real
    test split and training images, the judge, and the copy-rate threshold (module docstring)."""

    def __init__(self, evaluator: GenerativeEvaluator, distilled_images: torch.Tensor, ctx):
        self.data = ctx.data
        self.judge = ctx.role(JUDGE)
        if evaluator.fid_features == "inception":
            features = InceptionFeatures(evaluator.inception_network().to(ctx.device), ctx.data)
            self.extractor_description = "inception: torchmetrics' FID Inception-v3, 2048 pool3 features"
        else:
            features = JudgeFeatures(self.judge, ctx.test_images)
            judge = ctx.roles.role(JUDGE)
            model = getattr(judge, "model", None)
            model = model.get("name") if isinstance(model, dict) else model
            self.extractor_description = (f"classifier: roles.{JUDGE} ({model}, seed {getattr(judge, 'seed', '?')}), "
                                          f"last feature map averaged over space, {features.num_features} features")
        batch = evaluator.batch_size
        self.fid_held_out = FrechetDistance(features, ctx.test_images, batch)
        self.fid_train = FrechetDistance(features, ctx.train_images, batch)
        self.fid_reference = {"held_out": f"real test split ({len(ctx.test_images)} images)",
                              "train": f"real training images ({len(ctx.train_images)})"}
        # copy rate: distances in pixels in [-1, 1], the training side being the real training images and the set
        train_pixels = to_model_space(ctx.train_images, ctx.data)
        self.training_pixels = torch.cat([train_pixels, to_model_space(distilled_images, ctx.data)])
        test = ctx.test_images[first(evaluator.copy_reference_images, len(ctx.test_images), ctx.device)]
        test_distances = nearest_distances(to_model_space(test, ctx.data), train_pixels)
        median = test_distances.median().item()
        self.threshold = evaluator.copy_threshold * median
        self.copy_rule = (f"a generated image is a copy when its nearest training image (real training images and "
                          f"the distilled set; Euclidean, pixels in [-1, 1]) is closer than "
                          f"{evaluator.copy_threshold:g} × {median:.4g}, the median nearest-training-image distance "
                          f"of {len(test)} real test images: {self.threshold:.4g}")
        # what real unseen images score: the floor a perfect generator would reach with as many images
        real = ctx.train_images[first(evaluator.samples_per_class * ctx.data.num_classes, len(ctx.train_images),
                                      ctx.device)]
        self.real = {"fid_held_out_of_real_training_images": self.fid_held_out(real), "images": len(real),
                     "copy_rate_of_real_test_images": (test_distances < self.threshold).float().mean().item()}

    def copy_rate(self, generated: torch.Tensor) -> float:
        return copy_rate(to_model_space(generated, self.data), self.training_pixels, self.threshold)


def first(count: int, total: int, device) -> torch.Tensor:
    """``count`` (at most ``total``) indices of a fixed random order of ``total`` items: the same draw every run."""
    return torch.randperm(total, generator=torch.Generator().manual_seed(0))[:count].to(device)
