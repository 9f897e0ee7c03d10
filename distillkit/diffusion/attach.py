"""D2C's Attach (Huang, Shao et al. 2025): what a class-conditional diffusion denoiser (a UNet or a DiT) is
given besides its images while it trains on a (small) set. Two parts, each off unless asked for (``attach:`` of
the generative evaluator, :class:`AttachSettings`):

* **semantic** — the class conditioning becomes a *DC-Embedding* of the class's caption: the text encoder's
  token embeddings t of "a photo of a {class}" (T5, 16 tokens, computed once per class and cached), then
  ``t̃ = Conv1d(t ⊙ mask)`` over the token axis (masked mean over the tokens: one vector per class),
  ``y = MLP(t̃) + t̃ + e_c`` with ``e_c`` a learnable class embedding that keeps a null class (classifier-free
  guidance; its text is empty). ``y`` replaces the denoiser's class embedding (:class:`DCEmbedding` takes the
  place of ``UNet2DModel.class_embedding``, or of the class embedder in every DiT block, one module shared by
  all), so training, sampling and the denoising error call the denoiser with class indices as before.
  ``encoder: none`` is the offline stand-in: no text, ``y = e_c`` alone.
* **visual** — REPA: the output of one block (``block``: a UNet's ``mid_block``…, a DiT's
  ``transformer_blocks.<i>``) is read by a forward hook, each of its h·w positions (a DiT's tokens) goes through
  a 3-layer SiLU MLP projector φ, and the training loss gains ``weight · (−mean_i cos(φ(h_i), v_i))`` against a
  frozen encoder's feature map v of the same clean image, resized to the block's grid (:class:`FeatureAlignment`,
  an extra loss of :func:`distillkit.diffusion.training.train_denoiser`). Encoders: ``dinov2`` (timm, hub
  weights) or the offline stand-in ``teacher`` (the cached classifier role's intermediate feature map). The
  encoder features of the training images are computed once and cached; the projector trains with the
  denoiser and is not used to sample.

Which encoder produced every number is in :meth:`Attach.describe` (the evaluator's ``details.attach``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from distillkit.cache import cache_spec, content_digest
from distillkit.diffusion.denoisers import set_class_embedding
from distillkit.diffusion.encoders import (EncoderUnavailable, build_vit, t5_token_embeddings, teacher_feature_maps,
                                           teacher_layer, to_grid, vit_feature_maps)
from distillkit.validation import ConfigError, PositiveFloat, PositiveInt

log = logging.getLogger("distillkit")

TEACHER = "teacher"
FEATURES_FILE = "features.safetensors"
COST_FILE = "cost.json"


@dataclass
class SemanticAttach:
    """``attach.semantic``: the DC-Embedding of the class caption as the class conditioning."""

    enabled: bool = False
    encoder: Literal["t5", "none"] = "t5"   # none: the learnable class embedding alone (no text)
    t5_model: str = "google/t5-v1_1-xl"     # a hub id or a local folder (encoder + tokenizer)
    prompt: str = "a photo of a {}"         # {} is the class name
    max_tokens: PositiveInt = 16            # captions padded / truncated to this many tokens
    kernel_size: PositiveInt = 3            # Conv1d over the tokens (odd)


@dataclass
class VisualAttach:
    """``attach.visual``: REPA alignment of a UNet block with a frozen encoder's features."""

    enabled: bool = False
    encoder: Literal["dinov2", "teacher"] = "dinov2"
    weight: PositiveFloat = 0.5
    block: str = "mid_block"
    projector_dim: PositiveInt = 2048
    dinov2_model: str = "vit_base_patch14_dinov2.lvd142m"  # a timm name
    dinov2_weights: str | None = None       # a local weights file instead of the hub's
    image_size: PositiveInt = 224           # the ViT's input size
    batch_size: PositiveInt = 64            # images per encoder forward (speed only)


@dataclass
class AttachSettings:
    semantic: SemanticAttach = field(default_factory=SemanticAttach)
    visual: VisualAttach = field(default_factory=VisualAttach)


# ---- the modules -----------------------------------------------------------------------------------

class DCEmbedding(nn.Module):
    """Class index → the UNet's class embedding (``dim``): ``y = MLP(t̃) + t̃ + e_c``, ``t̃`` the masked mean over
    the tokens of ``Conv1d(t ⊙ mask)``. Index ``num_classes`` is the null class (empty text). Without ``text``
    (``encoder: none``), ``y = e_c``. The token embeddings are a buffer that is not saved with the weights
    (they come from the cache)."""

    def __init__(self, num_classes: int, dim: int, text: tuple[torch.Tensor, torch.Tensor] | None = None,
                 kernel_size: int = 3):
        super().__init__()
        self.classes = nn.Embedding(num_classes + 1, dim)
        self.has_text = text is not None
        if text is None:
            return
        tokens, mask = text  # K × L × D, K × L
        null = torch.zeros_like(tokens[:1])
        self.register_buffer("tokens", torch.cat([tokens, null]), persistent=False)
        self.register_buffer("mask", torch.cat([mask, torch.zeros_like(mask[:1])]), persistent=False)
        self.conv = nn.Conv1d(tokens.shape[-1], dim, kernel_size, padding=kernel_size // 2)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        class_embedding = self.classes(labels)
        if not self.has_text:
            return class_embedding
        mask = self.mask[labels].unsqueeze(1)                                     # B × 1 × L
        convolved = self.conv((self.tokens[labels] * mask.transpose(1, 2)).transpose(1, 2))  # B × dim × L
        pooled = (convolved * mask).sum(-1) / mask.sum(-1).clamp(min=1)           # B × dim
        return self.mlp(pooled) + pooled + class_embedding


def projector(channels: int, hidden: int, out: int) -> nn.Sequential:
    """REPA's projector: three linear layers with SiLU between them."""
    return nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                         nn.Linear(hidden, out))


class FeatureAlignment(nn.Module):
    """REPA's alignment loss, an extra loss of the diffusion training: ``−mean_i cos(φ(h_i), v_i)`` over the
    batch's images and the block's h·w positions, ``h`` the output of ``block`` in the step's forward (kept by
    a forward hook while the UNet trains), ``v`` = ``targets[batch.indices]`` (N × h·w × D, not saved with the
    loss's state)."""

    def __init__(self, block: nn.Module, channels: int, targets: torch.Tensor, hidden: int, weight: float):
        super().__init__()
        self.weight = weight
        self.projector = projector(channels, hidden, targets.shape[-1])
        self.register_buffer("targets", targets, persistent=False)
        self.hidden: torch.Tensor | None = None
        self.hook = block.register_forward_hook(self.keep)

    def keep(self, module, inputs, output) -> None:
        if module.training and torch.is_grad_enabled():  # training steps only, not sampling at a milestone
            self.hidden = output[0] if isinstance(output, tuple) else output

    def alignment(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``−mean cos(φ(h), v)`` of a block output (B × C × h × w, or a DiT's tokens B × h·w × C) and its targets
        (B × h·w × D)."""
        tokens = hidden.flatten(2).transpose(1, 2) if hidden.dim() == 4 else hidden
        projected = self.projector(tokens)
        return -F.cosine_similarity(projected.float(), targets.float(), dim=-1).mean()

    def forward(self, batch) -> torch.Tensor:
        if self.hidden is None:
            raise RuntimeError("the alignment loss saw no output of its UNet block in this step")
        hidden, self.hidden = self.hidden, None
        return self.alignment(hidden, self.targets[batch.indices])


# ---- the options, applied ------------------------------------------------------------------------------

class Attach:
    """The ``attach:`` options of one diffusion training: :meth:`check` (before anything runs: builds the
    encoders, so missing weights stop the run at once), :meth:`apply` (to a fresh UNet: its DC-Embedding, and
    the alignment loss for its training), :meth:`describe` (what produced the numbers). ``key``: where the
    options sit in the config (messages)."""

    def __init__(self, settings: AttachSettings, blocks: list[str], key: str = "attach"):
        self.semantic, self.visual, self.key = settings.semantic, settings.visual, key
        if self.semantic.kernel_size % 2 == 0:
            raise ConfigError("attach.semantic.kernel_size", f"must be odd (got {self.semantic.kernel_size})")
        if "{}" not in self.semantic.prompt:
            raise ConfigError("attach.semantic.prompt", f"needs {{}} where the class name goes (got "
                                                        f"{self.semantic.prompt!r})")
        if self.visual.enabled and self.visual.block not in blocks:
            raise ConfigError("attach.visual.block", f"must be one of the denoiser's blocks, {', '.join(blocks)} (got "
                                                     f"{self.visual.block!r})")
        self._text: tuple[torch.Tensor, torch.Tensor] | None = None
        self._vit: nn.Module | None = None
        self.cost: dict[str, dict] = {}

    @property
    def enabled(self) -> bool:
        return self.semantic.enabled or self.visual.enabled

    @property
    def roles(self) -> tuple[str, ...]:
        return (TEACHER,) if self.visual.enabled and self.visual.encoder == TEACHER else ()

    def settings(self) -> dict:
        """What changes the trained model (fingerprints, cache keys)."""
        semantic = vars(self.semantic) if self.semantic.enabled else {"enabled": False}
        visual = {k: v for k, v in vars(self.visual).items() if k != "batch_size"} if self.visual.enabled else {
            "enabled": False}
        return {"semantic": semantic, "visual": visual}

    def check(self, ctx) -> None:
        """Build what needs weights now (the class text embeddings, the DINOv2 ViT): a missing package or download
        is one line before anything trains."""
        if self.semantic.enabled and self.semantic.encoder == "t5":
            self.text_embeddings(ctx)
        if self.visual.enabled and self.visual.encoder == "dinov2":
            self.vit()

    # ---- semantic ----
    def text_embeddings(self, ctx) -> tuple[torch.Tensor, torch.Tensor]:
        """T5 token embeddings and masks of every class's caption, cached by model, captions and length."""
        if self._text is None:
            from safetensors.torch import load_file, save_file

            captions = [self.semantic.prompt.format(name) for name in ctx.data.classes]
            spec = cache_spec(ctx.dataset_identity, "fp32", t5=self.semantic.t5_model, captions=captions,
                              max_tokens=self.semantic.max_tokens)

            def build(folder) -> None:
                tokens, mask = self.unavailable_as_config_error("semantic.encoder", "t5", lambda: t5_token_embeddings(
                    self.semantic.t5_model, captions, self.semantic.max_tokens, ctx.device))
                save_file({"tokens": tokens.cpu().contiguous(), "mask": mask.cpu().contiguous()},
                          str(folder / FEATURES_FILE))

            folder, self.cost["semantic"] = self.cached(ctx, "attach_text_embeddings", spec, build)
            saved = load_file(str(folder / FEATURES_FILE), device=str(ctx.device))
            self._text = saved["tokens"], saved["mask"]
        return self._text

    # ---- visual ----
    def vit(self) -> nn.Module:
        if self._vit is None:
            self._vit = self.unavailable_as_config_error("visual.encoder", "dinov2", lambda: build_vit(
                self.visual.dinov2_model, self.visual.image_size, weights=self.visual.dinov2_weights))
        return self._vit

    def visual_targets(self, images: torch.Tensor, grid: tuple[int, int], ctx) -> torch.Tensor:
        """The encoder's features of ``images`` (normalised) at the block's ``grid``: N × h·w × D, cached."""
        from safetensors.torch import load_file, save_file

        if self.visual.encoder == TEACHER:
            role = ctx.roles.role(TEACHER)
            teacher = ctx.role(TEACHER)
            layer = self.unavailable_as_config_error("visual.encoder", TEACHER,
                                                     lambda: teacher_layer(teacher, images, grid[0]))
            encoder = {"teacher": role.spec(ctx), "weights": getattr(role, "weights", None), "layer": layer}
            maps = lambda chunk: teacher_feature_maps(teacher, layer, chunk, self.visual.batch_size)  # noqa: E731
        else:
            encoder = {"timm": self.visual.dinov2_model, "weights": self.visual.dinov2_weights or "hub",
                       "image_size": self.visual.image_size}
            maps = lambda chunk: vit_feature_maps(self.vit().to(ctx.device), chunk, ctx.data,  # noqa: E731
                                                  self.visual.batch_size)
        spec = cache_spec(ctx.dataset_identity, "fp32", encoder=encoder, images=content_digest(images),
                          grid=list(grid))

        def build(folder) -> None:  # chunk by chunk: only the block-grid tokens of the whole set are kept
            shape, tokens = None, []
            for chunk in images.split(self.visual.batch_size):
                extracted = maps(chunk)
                shape = extracted.shape[1:]
                tokens.append(to_grid(extracted, grid).half().cpu())
            save_file({"features": torch.cat(tokens), "source_shape": torch.tensor(shape)}, str(folder / FEATURES_FILE))

        folder, self.cost["visual"] = self.cached(ctx, "attach_visual_features", spec, build)
        saved = load_file(str(folder / FEATURES_FILE), device=str(ctx.device))
        self.cost["visual"]["source_shape"] = saved["source_shape"].tolist()
        if self.visual.encoder == TEACHER:
            self.cost["visual"]["layer"] = layer
        return saved["features"]

    # ---- both ----
    def apply(self, denoiser: nn.Module, inputs: torch.Tensor, images: torch.Tensor, ctx) -> list[nn.Module]:
        """Give a fresh ``denoiser`` (UNet or DiT) its DC-Embedding (semantic) and return the extra losses of its
        training (visual). ``inputs``: the training images as the denoiser sees them, ``images`` the same
        normalised."""
        if self.semantic.enabled:
            text = self.text_embeddings(ctx) if self.semantic.encoder == "t5" else None
            set_class_embedding(denoiser, lambda width: DCEmbedding(ctx.data.num_classes, width, text,
                                                                    self.semantic.kernel_size).to(inputs.device))
        if not self.visual.enabled:
            return []
        block = denoiser.get_submodule(self.visual.block)
        output = block_output(denoiser, block, inputs[:1])
        if output.dim() == 3:  # a DiT block's tokens (1 × h·w × C) on a square grid
            side = math.isqrt(output.shape[1])
            grid, channels = (side, side), output.shape[2]
        else:  # a UNet block's feature map (1 × C × h × w)
            grid, channels = tuple(output.shape[-2:]), output.shape[1]
        targets = self.visual_targets(images, grid, ctx)
        return [FeatureAlignment(block, channels, targets, self.visual.projector_dim,
                                 self.visual.weight).to(inputs.device)]

    def describe(self, ctx) -> dict:
        """Which encoders produced the numbers, and what computing their features cost."""
        semantic, visual = self.semantic, self.visual
        described = {}
        if not semantic.enabled:
            described["semantic"] = "off"
        elif semantic.encoder == "none":
            described["semantic"] = ("DC-Embedding without text (encoder none): the learnable class embedding alone, "
                                     "a stand-in for T5")
        else:
            tokens, _ = self.text_embeddings(ctx)
            described["semantic"] = {"encoder": f"t5: {semantic.t5_model}", "prompt": semantic.prompt,
                                     "max_tokens": semantic.max_tokens, "dim": tokens.shape[-1],
                                     **self.cost.get("semantic", {})}
        if not visual.enabled:
            described["visual"] = "off"
        else:
            cost = dict(self.cost.get("visual", {}))
            if visual.encoder == TEACHER:
                role = ctx.roles.role(TEACHER)
                model = getattr(role, "model", None)
                model = model.get("name") if isinstance(model, dict) else model
                encoder = (f"teacher: roles.teacher ({model}) feature map after features[{cost.pop('layer', '?')}] "
                           "(a local stand-in for DINOv2)")
            else:
                encoder = f"dinov2: timm {visual.dinov2_model} at {visual.image_size} px ({visual.dinov2_weights or 'hub weights'})"
            described["visual"] = {"encoder": encoder, "block": visual.block, "weight": visual.weight,
                                   "projector_dim": visual.projector_dim, **cost}
        return described

    def cached(self, ctx, kind: str, spec: dict, build) -> tuple[object, dict]:
        """``ctx.cache``'s entry, built (and timed) when missing: (its folder, {seconds, from_cache})."""
        from_cache = ctx.cache.find(kind, spec) is not None

        def timed(folder) -> None:
            start = time.perf_counter()
            build(folder)
            (folder / COST_FILE).write_text(json.dumps({"seconds": round(time.perf_counter() - start, 3)}))

        folder = ctx.cache.get_or_create(kind, spec, timed)
        seconds = json.loads((folder / COST_FILE).read_text())["seconds"]
        log.info("attach: %s %s", kind, f"read from the cache (computing took {seconds:.1f} s)" if from_cache
                 else f"computed in {seconds:.1f} s")
        return folder, {"seconds": seconds, "from_cache": from_cache}

    def unavailable_as_config_error(self, key: str, name: str, make):
        try:
            return make()
        except EncoderUnavailable as err:
            hint = {"t5": f"without it use {self.key}.semantic.encoder=none (the class embedding alone)",
                    "dinov2": (f"without it use {self.key}.visual.encoder=teacher (the teacher's feature maps) or "
                               f"{self.key}.visual.dinov2_weights=<file>"),
                    TEACHER: f"or use {self.key}.visual.encoder=dinov2"}[name]
            raise ConfigError(f"{self.key}.{key}", f"{name}: {err}; {hint}") from None


@torch.no_grad()
def block_output(denoiser: nn.Module, block: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """What ``block`` gives for one forward of ``inputs`` (its shape: the grid and channels to align)."""
    seen = []
    handle = block.register_forward_hook(lambda m, i, o: seen.append(o[0] if isinstance(o, tuple) else o))
    try:
        denoiser(inputs, torch.zeros(len(inputs), dtype=torch.long, device=inputs.device),
                 class_labels=torch.zeros(len(inputs), dtype=torch.long, device=inputs.device))
    finally:
        handle.remove()
    return seen[0]
