"""The generative evaluator's DiT option (``evaluator.denoiser=dit``): the class-conditional DiT itself, its
pixel and VAE-latent spaces (a tiny random ``AutoencoderKL`` saved to a folder, as a local SD-VAE would be), a
tiny run end to end on each, D2C's Attach on a DiT, and the one-line error for a VAE that cannot load.

Tiny digits (``support.TINY``) and budget=smoke: numbers mean nothing, only shapes, wiring and direction are
tested. Nothing is downloaded.
"""

from __future__ import annotations

import pytest
import torch

from distillkit.diffusion.denoisers import SharedEmbedding, build_dit
from distillkit.diffusion.spaces import LatentSpace, load_vae
from distillkit.roles.diffusion import untrained_local_diffusion
from distillkit.run import execute
from distillkit.validation import build
from support import TINY, compose, distillkit, tiny_context

DIT = {"depth": 2, "heads": 2, "head_dim": 8, "patch_size": 2, "latents": "pixels", "vae": "none",
       "vae_image_size": 16}
SMALL_DIT = ("evaluator.denoiser=dit", "evaluator.dit.depth=2", "evaluator.dit.heads=2", "evaluator.dit.head_dim=8")
GENERATIVE_DIT = (*TINY, "method=random", "ipc=2", "evaluator=generative", *SMALL_DIT)
METRICS = ("fid_held_out", "fid_train", "generated_accuracy", "copy_rate")


def tiny_vae_folder(path):
    """A random two-level AutoencoderKL (halves the image once, 4 latent channels), saved as a diffusers folder."""
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(32, 32), layers_per_block=1, latent_channels=4,
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                  norm_num_groups=32).save_pretrained(path)
    return path


def test_dit_predicts_noise_of_its_input_shape_conditioned_on_the_class_without_its_own_label_dropout():
    torch.manual_seed(0)
    dit = build_dit(DIT, channels=1, num_classes=10, side=8).train()
    x, t = torch.randn(4, 1, 8, 8), torch.tensor([3, 300, 600, 900])
    for block in dit.transformer_blocks:  # diffusers zero-initialises the adaLN modulation: give it a signal
        torch.nn.init.normal_(block.norm1.linear.weight, std=0.2)
    out = dit(x, t, class_labels=torch.tensor([0, 1, 2, 10])).sample  # 10: the null class
    assert out.shape == x.shape  # the noise alone: no learned-variance channels
    again = dit(x, t, class_labels=torch.tensor([0, 1, 2, 10])).sample
    assert torch.equal(out, again)  # in training mode too: no label draw inside the DiT
    other = dit(x, t, class_labels=torch.tensor([5, 1, 2, 10])).sample
    assert not torch.allclose(out[0], other[0]) and torch.allclose(out[1:], other[1:])
    scalar_t = dit(x, torch.tensor(300), class_labels=torch.tensor([0, 1, 2, 10])).sample  # DDIM's one t
    assert torch.allclose(scalar_t[1], out[1])


def test_a_vae_latent_space_encodes_to_the_vae_grid_and_decodes_to_the_dataset(tmp_path):
    ctx = tiny_context(None)
    vae = load_vae(str(tiny_vae_folder(tmp_path / "vae")), ctx.device)
    space = LatentSpace(vae, ctx.data, image_size=16, batch_size=7)
    latents = space.encode(ctx.train_images[:10])
    assert space.shape == (4, 8, 8) and latents.shape == (10, 4, 8, 8)
    assert torch.equal(space.encode(ctx.train_images[:10]), latents)  # the posterior mean: no draw
    decoded = space.decode(latents)
    assert decoded.shape == ctx.train_images[:10].shape and torch.isfinite(decoded).all()
    model = untrained_local_diffusion({}, {"timesteps": 1000, "beta_schedule": "linear"}, ctx.data, False,
                                      ctx.device, dit_cfg={**DIT, "latents": "vae"}, vae=vae)
    assert model.space.clip is False  # DDIM must not clip latents to [-1, 1]
    assert model.denoiser.config.sample_size == 8 and model.denoiser.config.in_channels == 4


@pytest.mark.parametrize("latents", ["pixels", "vae"])
def test_a_dit_trains_on_the_set_and_is_measured_at_every_length(tmp_path, latents):
    extra = ()
    if latents == "vae":
        extra = ("evaluator.dit.latents=vae", f"evaluator.dit.vae={tiny_vae_folder(tmp_path / 'vae')}",
                 "evaluator.dit.vae_image_size=16")
    results = execute(compose(*GENERATIVE_DIT, *extra), tmp_path / "run")
    metrics = results["metrics"]
    assert all(metrics[name]["mean"] >= 0 for name in METRICS)
    assert 0 <= metrics["copy_rate"]["mean"] <= 1 and 0 <= metrics["generated_accuracy"]["mean"] <= 100
    denoiser = results["generative"]["denoiser"]
    assert list(denoiser) == ["dit"] and denoiser["dit"]["latents"] == latents and denoiser["dit"]["depth"] == 2
    # another denoiser is another protocol: the UNet's numbers are not the DiT's
    unet = execute(compose(*TINY, "method=random", "ipc=2", "evaluator=generative"), tmp_path / "unet")
    assert unet["metrics"]["fid_held_out"]["runs"] != metrics["fid_held_out"]["runs"]


def test_attach_on_a_dit_shares_one_dc_embedding_and_aligns_a_transformer_block(tmp_path):
    ctx = tiny_context(tmp_path, "method=d2c", "ipc=2", *SMALL_DIT,
                       "evaluator.attach.visual.block=transformer_blocks.1")
    evaluator = build(ctx.cfg.evaluator, "evaluator")
    evaluator.check(ctx)
    torch.manual_seed(0)
    model = untrained_local_diffusion(evaluator.unet_cfg, evaluator.train_cfg, ctx.data, False, ctx.device,
                                      dit_cfg=evaluator.dit_cfg)
    before = sum(p.numel() for p in model.denoiser.parameters())
    losses = evaluator.attach.apply(model.denoiser, model.inputs(ctx.train_images), ctx.train_images, ctx)
    embedders = [block.norm1.emb.class_embedder for block in model.denoiser.transformer_blocks]
    assert all(isinstance(e, SharedEmbedding) and e.shared[0] is model.denoiser.class_embedding for e in embedders)
    replaced = sum(p.numel() for p in model.denoiser.parameters())
    own = sum(p.numel() for p in model.denoiser.class_embedding.parameters())
    assert replaced < before + own  # counted once, and the per-block label tables are gone
    alignment, = losses
    assert alignment.targets.shape[:2] == (len(ctx.train_images), 16)  # 8×8 digits in 2-px patches: 4×4 tokens
    model.fit(ctx.train_images, ctx.train_labels, tmp_path / "fit", 0, extra_losses=losses)
    assert (tmp_path / "fit" / "unet" / "config.json").is_file()


def test_a_vae_that_cannot_load_is_one_line_before_anything_runs(tmp_path):
    missing = tmp_path / "no_vae"
    out = distillkit("run", *GENERATIVE_DIT, "evaluator.dit.latents=vae", f"evaluator.dit.vae={missing}",
                     f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"distillkit: error: evaluator.dit.vae: cannot load the VAE '{missing}'")
    assert "evaluator.dit.latents=pixels" in err[0]
    assert not (tmp_path / "run" / "distilled.safetensors").exists()


@pytest.mark.parametrize("experiment", ["d2c_imagenette_ipc10", "d2c_imagewoof_ipc10"])
def test_the_imagenet_subset_experiments_train_dit_l2_on_sd_vae_latents(experiment):
    """The GPU-scale configs build the paper's DiT-L/2 (458 M parameters; diffusers gives every block its own
    timestep and label embedder, the original shares one) — on the meta device, so nothing is allocated."""
    cfg = compose(f"experiment={experiment}")
    evaluator = build(cfg.evaluator, "evaluator")
    assert evaluator.dit_cfg["latents"] == "vae" and cfg.dataset.image_size == 256
    assert evaluator.lengths == [100_000, 300_000] and evaluator.guidance_scale == 1.5
    assert evaluator.attach.visual.block == "transformer_blocks.7" and evaluator.attach.enabled
    with torch.device("meta"):
        dit = build_dit(evaluator.dit_cfg, channels=4, num_classes=10, side=256 // 8)
    per_block = [sum(p.numel() for p in block.norm1.emb.parameters()) for block in dit.transformer_blocks]
    shared_once = sum(p.numel() for p in dit.parameters()) - sum(per_block) + per_block[0]
    assert len(dit.transformer_blocks) == 24 and dit.inner_dim == 1024
    assert shared_once == pytest.approx(458e6, rel=0.01)
    labels = cfg.roles.diffusion.pretrained.class_map  # the scorer's map: every class folder to its ImageNet label
    assert len(labels) == 10 and all(0 <= int(v) < 1000 for v in labels.values())
