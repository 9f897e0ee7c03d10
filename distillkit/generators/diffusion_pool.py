"""A pool of generated images for samplers to choose from (DGS): ``pool_factor × ipc`` per class.

``source: local`` trains a class-conditional diffusers ``UNet2DModel`` on the real training
images (DDPM noise prediction, a null class for classifier-free guidance) and samples it with
DDIM. ``source: pretrained`` samples a class-conditional diffusers pipeline (DiT) with a map from
the dataset's classes to the pipeline's labels. Both return images in the dataset's normalised
space (ZCA-whitened when the dataset is).

The diffusion model works on pixels scaled to [-1, 1] (where DDPM/DDIM clip their samples), not
on the normalised data; the pool is mapped back. Images are padded (edge-replicated) to a size
the UNet can halve at every level and cropped after sampling.

Cached: the trained UNet (by dataset identity, UNet config, training config and generator seed;
training resumes from ``checkpoint.pt`` in the cache's partial folder) and the pool itself (by
the model, the sampling settings, the pool size and the run seed), so a sweep over samplers
generates once. Written to the run folder: ``pool.safetensors``, ``pool_grid.png`` and
``pool_quality.json`` (the teacher's accuracy on the generated images, per class).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from distillkit.data.datasets import dataset_identity
from distillkit.data.synthetic import SyntheticSet
from distillkit.errors import DivergedError, UserError
from distillkit.generators.iterative import positive_int
from distillkit.io import atomic_path, write_json
from distillkit.plots import save_grid
from distillkit.progress import progress
from distillkit.training import autocast, bf16_applies, predict

log = logging.getLogger("distillkit")

SOURCES = ("local", "pretrained")


def plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})


# between the dataset's normalised space and the diffusion model's pixel space

def to_model_space(images: torch.Tensor, data) -> torch.Tensor:
    """Normalised (possibly ZCA-whitened) images → pixels in [-1, 1]."""
    zca = data.extra.get("zca")
    if zca is not None:  # the whitening matrices were fitted, and stay, on the CPU
        images = zca.inverse(images.cpu()).to(images.device)
    return (data.denormalise(images) * 2 - 1).clamp(-1, 1)


def from_pixels(pixels: torch.Tensor, data) -> torch.Tensor:
    """Pixels in [0, 1] at the dataset's size and channels → the dataset's normalised space."""
    mean = torch.tensor(data.mean, device=pixels.device).view(1, -1, 1, 1)
    std = torch.tensor(data.std, device=pixels.device).view(1, -1, 1, 1)
    images = (pixels - mean) / std
    zca = data.extra.get("zca")
    return zca(images.cpu()).to(images.device) if zca is not None else images


def padding_for(size: tuple[int, int], levels: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) padding to the next multiple of 2^(levels − 1) (the UNet halves
    the image once per level but the last)."""
    multiple = 2 ** (levels - 1)
    (h, w) = size
    extra_h, extra_w = (math.ceil(s / multiple) * multiple - s for s in (h, w))
    return extra_w // 2, extra_w - extra_w // 2, extra_h // 2, extra_h - extra_h // 2


def crop(images: torch.Tensor, padding: tuple[int, int, int, int]) -> torch.Tensor:
    left, right, top, bottom = padding
    return images[..., top:images.shape[-2] - bottom, left:images.shape[-1] - right]


def to_channels(pixels: torch.Tensor, channels: int) -> torch.Tensor:
    """RGB output for a grey dataset becomes luminance (ITU-R 601); grey for RGB is repeated."""
    if pixels.shape[1] == channels:
        return pixels
    if channels == 1 and pixels.shape[1] == 3:
        weights = torch.tensor([0.299, 0.587, 0.114], device=pixels.device).view(1, 3, 1, 1)
        return (pixels * weights).sum(1, keepdim=True)
    if channels == 3 and pixels.shape[1] == 1:
        return pixels.repeat(1, 3, 1, 1)
    raise UserError(f"cannot turn {pixels.shape[1]}-channel generated images into {channels}-channel ones")


# the local class-conditional UNet

def build_unet(unet_cfg: dict, channels: int, num_classes: int, sample_size: tuple[int, int]):
    """A class-conditional ``UNet2DModel``; class index ``num_classes`` is the null class (CFG)."""
    from diffusers import UNet2DModel

    widths = [int(unet_cfg["width"]) * int(m) for m in unet_cfg["channel_mult"]]
    attend = [bool(unet_cfg["attention"]) and i == len(widths) - 1 for i in range(len(widths))]  # deepest only
    down = ["AttnDownBlock2D" if a else "DownBlock2D" for a in attend]
    up = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attend)]  # up blocks run deepest first
    return UNet2DModel(
        sample_size=sample_size, in_channels=channels, out_channels=channels,
        layers_per_block=int(unet_cfg["layers_per_block"]), block_out_channels=widths,
        down_block_types=down, up_block_types=up,
        # 32 groups as in DDPM, fewer when the width is not a multiple of 32
        norm_num_groups=math.gcd(32, *widths), num_class_embeds=num_classes + 1,
    )


def noise_schedule(train_cfg: dict):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=int(train_cfg["timesteps"]), beta_schedule=train_cfg["beta_schedule"],
                         clip_sample=True, prediction_type="epsilon")


def train_unet(unet, pixels: torch.Tensor, labels: torch.Tensor, null_class: int, train_cfg: dict, folder: Path,
               seed: int, amp: bool) -> None:
    """DDPM noise-prediction training, resumable from ``folder/checkpoint.pt``; writes
    ``folder/unet`` (EMA weights when ``ema_decay`` is set) and ``folder/training.json``."""
    from diffusers.training_utils import EMAModel

    device = pixels.device
    steps, batch, every = int(train_cfg["steps"]), int(train_cfg["batch_size"]), int(train_cfg["checkpoint_every"])
    scheduler = noise_schedule(train_cfg)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=float(train_cfg["lr"]),
                                  weight_decay=float(train_cfg["weight_decay"]))
    warmup = max(1, int(train_cfg["warmup_steps"]))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warmup))
    ema = EMAModel(unet.parameters(), decay=float(train_cfg["ema_decay"])) if train_cfg["ema_decay"] else None
    generator = torch.Generator(device).manual_seed(seed)
    checkpoint, start, history = folder / "checkpoint.pt", 0, []
    if checkpoint.is_file():
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        unet.load_state_dict(state["unet"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
            ema.to(device)
        generator.set_state(state["rng"])
        start, history = int(state["step"]), list(state["history"])
        log.info("resuming diffusion training at step %d/%d from %s", start, steps, checkpoint)
    unet.train()
    running, logged_at = torch.zeros((), device=device), start
    for step in progress(range(start, steps), desc="diffusion", total=steps - start):
        idx = torch.randint(len(pixels), (min(batch, len(pixels)),), device=device, generator=generator)
        clean, cond = pixels[idx], labels[idx]
        dropped = torch.rand(len(idx), device=device, generator=generator) < float(train_cfg["label_dropout"])
        cond = torch.where(dropped, torch.full_like(cond, null_class), cond)
        noise = torch.randn(clean.shape, device=device, generator=generator)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), device=device, generator=generator)
        with autocast(device, amp, on_cpu=True):
            predicted = unet(scheduler.add_noise(clean, noise, t), t, class_labels=cond).sample
        loss = F.mse_loss(predicted.float(), noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), float(train_cfg["grad_clip"]))
        optimizer.step()
        schedule.step()
        if ema is not None:
            ema.step(unet.parameters())
        running += loss.detach()
        done = step + 1
        if done % every == 0 or done == steps:  # the only host sync: NaN check, then a checkpoint
            mean_loss = running.item() / (done - logged_at)
            running.zero_()
            logged_at = done
            if not math.isfinite(mean_loss):
                where = f"resume point: {checkpoint}" if checkpoint.is_file() else "no checkpoint yet"
                raise DivergedError(f"diffusion training: the loss became {mean_loss} by step {done} ({where}); "
                                    "lower generator.train.lr")
            history.append({"step": done, "loss": mean_loss})
            state = {"unet": unet.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                     "ema": ema.state_dict() if ema is not None else {}, "rng": generator.get_state(),
                     "step": done, "history": history}
            with atomic_path(checkpoint) as tmp:
                torch.save(state, tmp)
    if ema is not None:
        ema.copy_to(unet.parameters())
    unet.save_pretrained(folder / "unet")
    write_json(folder / "training.json", {"steps": steps, "loss": history})
    checkpoint.unlink(missing_ok=True)


@torch.no_grad()
def sample_unet(unet, labels: torch.Tensor, null_class: int, train_cfg: dict, steps: int, guidance_scale: float,
                generator: torch.Generator, amp: bool) -> torch.Tensor:
    """DDIM (eta 0) with classifier-free guidance ``ε_u + w (ε_c − ε_u)``; pixels in [-1, 1], padded."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(noise_schedule(train_cfg).config)
    scheduler.set_timesteps(steps)
    device = labels.device
    size = unet.config.sample_size
    x = torch.randn((len(labels), unet.config.in_channels, *size), device=device, generator=generator)
    guided = guidance_scale != 1.0  # w = 1 is plain conditional sampling: half the work
    cond = torch.cat([labels, torch.full_like(labels, null_class)]) if guided else labels
    for t in scheduler.timesteps:
        with autocast(device, amp, on_cpu=True):
            eps = unet(torch.cat([x, x]) if guided else x, t, class_labels=cond).sample.float()
        if guided:
            conditional, unconditional = eps.chunk(2)
            eps = unconditional + guidance_scale * (conditional - unconditional)
        x = scheduler.step(eps, t, x).prev_sample
    return x


# the generator stage

class DiffusionPool:
    """``pool_factor × ipc`` generated images per class (see ``conf/generator/diffusion_pool.yaml``).

    ``pipeline``: a ready diffusers pipeline for ``source: pretrained``, used instead of loading
    ``pretrained.model_id`` (for callers that built or loaded one themselves; never cached).
    """

    def __init__(self, source: str = "local", pool_factor: int = 5, seed: int = 0, guidance_scale: float = 2.0,
                 sampling_steps: int = 50, batch_size: int = 256, amp: bool = True, unet=None, train=None,
                 pretrained=None, pipeline=None):
        if source not in SOURCES:
            raise UserError(f"generator.source must be one of {', '.join(SOURCES)} (got '{source}')")
        self.source, self.pool_factor, self.seed = source, positive_int("pool_factor", pool_factor), int(seed)
        self.guidance_scale, self.sampling_steps = float(guidance_scale), int(sampling_steps)
        self.batch_size, self.amp = int(batch_size), bool(amp)
        self.unet_cfg, self.train_cfg, self.pretrained_cfg = plain(unet), plain(train), plain(pretrained)
        self.pipeline = pipeline

    def __call__(self, ctx) -> SyntheticSet:
        per_class = self.pool_factor * ctx.ipc
        if self.pipeline is not None:
            pool = self.generate(ctx, per_class)
        else:
            spec = {"model": self.model_spec(ctx), "sampling": {"guidance_scale": self.guidance_scale,
                    "steps": self.sampling_steps, "batch_size": self.batch_size}, "per_class": per_class,
                    "seed": ctx.seed + self.seed}
            folder = ctx.cache.get_or_create("diffusion_pool", spec,
                                             lambda f: self.generate(ctx, per_class).save(f / "pool.safetensors"))
            pool = SyntheticSet.load(folder / "pool.safetensors").to(ctx.device)
        if ctx.run_dir is not None:
            self.save_artefacts(pool, ctx)
        return pool

    def model_spec(self, ctx) -> dict:
        """What identifies the diffusion model (the UNet's cache key; part of the pool's)."""
        if self.source == "pretrained":
            return {"pretrained": self.pretrained_cfg, "dataset": dataset_identity(ctx.cfg.dataset)}
        # how often to checkpoint does not change the model; the precision that runs does (the amp
        # switch alone would let a bf16 and an fp32 model, trained on different hosts, share an entry)
        train = {k: v for k, v in self.train_cfg.items() if k != "checkpoint_every"}
        return {"dataset": dataset_identity(ctx.cfg.dataset), "unet": self.unet_cfg, "train": train,
                "seed": self.seed, "bf16": bf16_applies(ctx.device, self.amp, on_cpu=True)}

    def generate(self, ctx, per_class: int) -> SyntheticSet:
        labels = torch.arange(ctx.data.num_classes, device=ctx.device).repeat_interleave(per_class)
        generator = torch.Generator(ctx.device).manual_seed(ctx.seed + self.seed)
        sampler = self.local_sampler if self.source == "local" else self.pretrained_sampler
        make_batch = sampler(ctx, generator)
        log.info("generating %d images per class (%s diffusion, %d steps, guidance %.1f)", per_class, self.source,
                 self.sampling_steps, self.guidance_scale)
        images = torch.cat([make_batch(chunk) for chunk in progress(labels.split(self.batch_size), desc="pool")])
        if not torch.isfinite(images).all():
            raise DivergedError("the diffusion model generated NaN or infinite pixels; retrain it with a lower "
                                "generator.train.lr (delete its cache entry) or lower generator.guidance_scale")
        meta = {"source": f"diffusion_pool/{self.source}", "dataset": dataset_identity(ctx.cfg.dataset),
                "mean": list(ctx.data.mean), "std": list(ctx.data.std), "classes": ctx.data.classes,
                "zca": bool(ctx.cfg.dataset.get("zca", False))}
        return SyntheticSet(images, labels, meta=meta)

    def local_sampler(self, ctx, generator: torch.Generator):
        """Train (or load from the cache) the UNet; return labels → normalised images."""
        from diffusers import UNet2DModel

        levels = len(self.unet_cfg["channel_mult"])
        padding = padding_for(ctx.data.image_size, levels)
        left, right, top, bottom = padding
        padded_size = (ctx.data.image_size[0] + top + bottom, ctx.data.image_size[1] + left + right)
        null_class = ctx.data.num_classes

        def build(folder: Path) -> None:
            log.info("training a class-conditional diffusion UNet on %s (%d steps); cached for later runs",
                     ctx.data.name, self.train_cfg["steps"])
            torch.manual_seed(self.seed)
            unet = build_unet(self.unet_cfg, ctx.data.channels, ctx.data.num_classes, padded_size).to(ctx.device)
            pixels = F.pad(to_model_space(ctx.train_images, ctx.data), padding, mode="replicate")
            train_unet(unet, pixels, ctx.train_labels, null_class, self.train_cfg, folder, self.seed, self.amp)

        folder = ctx.cache.get_or_create("diffusion_unet", self.model_spec(ctx), build)
        # low_cpu_mem_usage would need accelerate, which distillkit does not depend on
        unet = UNet2DModel.from_pretrained(folder / "unet", low_cpu_mem_usage=False).to(ctx.device).eval()

        def make_batch(labels: torch.Tensor) -> torch.Tensor:
            pixels = sample_unet(unet, labels, null_class, self.train_cfg, self.sampling_steps, self.guidance_scale,
                                 generator, self.amp)
            return from_pixels((crop(pixels, padding) + 1) / 2, ctx.data)

        return make_batch

    def pretrained_sampler(self, ctx, generator: torch.Generator):
        """Load the pipeline; return labels → normalised images resized to the dataset's size."""
        pipeline_labels = self.class_map(ctx)  # before the (slow) load: a bad map fails at once
        pipeline = self.pipeline if self.pipeline is not None else self.load_pipeline()
        pipeline = pipeline.to(ctx.device)
        pipeline.set_progress_bar_config(disable=True)

        def make_batch(labels: torch.Tensor) -> torch.Tensor:
            with autocast(ctx.device, self.amp):
                pixels = pipeline(class_labels=pipeline_labels[labels].tolist(), guidance_scale=self.guidance_scale,
                                  num_inference_steps=self.sampling_steps, generator=generator,
                                  output_type="pt").images.float()
            pixels = F.interpolate(pixels, size=ctx.data.image_size, mode="bilinear", antialias=True,
                                   align_corners=False).clamp(0, 1)
            return from_pixels(to_channels(pixels, ctx.data.channels), ctx.data)

        return make_batch

    def load_pipeline(self):
        from diffusers import DiTPipeline

        model_id = self.pretrained_cfg.get("model_id")
        if not model_id:
            raise UserError("generator.source=pretrained needs generator.pretrained.model_id "
                            "(e.g. facebook/DiT-XL-2-256)")
        try:
            return DiTPipeline.from_pretrained(model_id)
        except (OSError, ValueError) as err:
            raise UserError(f"cannot load the diffusers pipeline '{model_id}' ({str(err).splitlines()[0]}); it needs "
                            "the hub weights (a network, or a local folder as model_id), or use generator.source=local"
                            ) from None

    def class_map(self, ctx) -> torch.Tensor:
        """The pipeline label of each dataset class, looked up by class folder name, then class name."""
        mapping = {str(k): v for k, v in (self.pretrained_cfg.get("class_map") or {}).items()}
        keys = ctx.data.extra.get("folder_classes") or ctx.data.classes
        missing = [k for k, name in zip(keys, ctx.data.classes) if k not in mapping and name not in mapping]
        if missing:
            raise UserError(f"generator.pretrained.class_map has no label for class(es) {', '.join(map(str, missing))}")
        labels = [mapping[k] if k in mapping else mapping[name] for k, name in zip(keys, ctx.data.classes)]
        return torch.tensor([int(v) for v in labels])

    def save_artefacts(self, pool: SyntheticSet, ctx) -> None:
        """``pool.safetensors``, ``pool_grid.png`` and ``pool_quality.json`` (teacher accuracy per class)."""
        run_dir = Path(ctx.run_dir)
        pool.save(run_dir / "pool.safetensors")
        save_grid(pool, ctx.data, run_dir / "pool_grid.png")
        correct = predict(ctx.teacher, pool.images).argmax(1) == pool.labels
        per_class = {name: round(100.0 * correct[pool.labels == c].float().mean().item(), 2)
                     for c, name in enumerate(ctx.data.classes)}
        mean = round(100.0 * correct.float().mean().item(), 2)
        write_json(run_dir / "pool_quality.json", {"teacher_accuracy": {"mean": mean, "per_class": per_class},
                                                   "images_per_class": len(pool) // ctx.data.num_classes})
        ctx.tracker.log_metrics({"pool/teacher_accuracy": mean,
                                 **{f"pool/teacher_accuracy/{name}": v for name, v in per_class.items()}})
        ctx.tracker.log_image("pool/grid", run_dir / "pool_grid.png")
