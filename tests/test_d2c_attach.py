"""D2C's Attach (``distillkit/diffusion/attach.py``): the DC-Embedding, REPA's alignment loss, the encoders
(a tiny random T5 saved to a folder, a tiny random timm ViT, the teacher role), their cached features,
``method=d2c`` end to end, and the one-line errors for encoders whose weights are not here.

Tiny digits (``support.TINY``) and smoke budgets: numbers mean nothing, only shapes, wiring and caching are
tested. Nothing is downloaded.
"""

from __future__ import annotations

import types

import pytest
import torch

import distillkit.cli as cli
import distillkit.diffusion.attach as attach_module
from distillkit.diffusion.attach import DCEmbedding, FeatureAlignment
from distillkit.diffusion.denoisers import build_unet
from distillkit.diffusion.encoders import build_vit, to_grid, vit_feature_maps
from distillkit.run import execute
from distillkit.validation import build
from support import TINY, compose, distillkit, tiny_context

D2C = (*TINY, "method=d2c", "ipc=2")
METRICS = ("fid_held_out", "fid_train", "generated_accuracy", "copy_rate")
UNET = {"width": 8, "channel_mult": [1, 2], "layers_per_block": 1, "attention": False}


def text(classes=3, tokens=5, dim=6):
    """Random token embeddings and masks of different lengths (3, 5, 1 tokens), zero where masked."""
    torch.manual_seed(0)
    mask = torch.zeros(classes, tokens)
    for c, n in enumerate((3, 5, 1)[:classes]):
        mask[c, :n] = 1
    return torch.randn(classes, tokens, dim) * mask[..., None], mask


def test_dc_embedding_shapes_null_class_mask_and_gradients():
    tokens, mask = text()
    embedding = DCEmbedding(3, 8, (tokens, mask), kernel_size=3)
    labels = torch.tensor([0, 1, 2, 3, 1])  # 3: the null class
    out = embedding(labels)
    assert out.shape == (5, 8)
    assert torch.allclose(out[1], out[4])  # one embedding per class
    for c in range(3):  # the null class is its own embedding
        assert not torch.allclose(out[3], out[c])
    out.square().sum().backward()
    for name in ("conv.weight", "conv.bias", "mlp.0.weight", "mlp.2.weight", "classes.weight"):
        grad = dict(embedding.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert embedding.classes.weight.grad[3].abs().sum() > 0  # the null class trains too (label dropout)

    # padded tokens do not count: changing them changes nothing
    noisy = tokens + torch.randn_like(tokens) * (1 - mask[..., None])
    again = DCEmbedding(3, 8, (noisy, mask))
    again.load_state_dict(embedding.state_dict())
    assert torch.allclose(again(labels), out)
    assert "tokens" not in embedding.state_dict()  # the text comes from the cache, not the checkpoint

    plain = DCEmbedding(3, 8)  # encoder none: the learnable class embedding alone
    assert torch.equal(plain(labels), plain.classes(labels)) and set(plain.state_dict()) == {"classes.weight"}


def test_alignment_loss_is_minus_one_when_aligned_and_trains_projector_and_block():
    torch.manual_seed(0)
    unet = build_unet(UNET, 1, 3, (8, 8)).train()
    block = unet.get_submodule("mid_block")
    targets = torch.randn(6, 16, 5)  # 6 images, a 4×4 grid, 5-d features
    loss = FeatureAlignment(block, 16, targets, hidden=12, weight=0.5)
    assert isinstance(loss.projector, torch.nn.Sequential) and len(loss.projector) == 5  # 3 linear layers, 2 SiLU

    hidden = torch.randn(2, 16, 4, 4)
    aligned = loss.projector(hidden.flatten(2).transpose(1, 2)).detach()
    assert loss.alignment(hidden, aligned).item() == pytest.approx(-1.0, abs=1e-6)
    assert loss.alignment(hidden, -aligned).item() == pytest.approx(1.0, abs=1e-6)
    assert loss.alignment(hidden, 3 * aligned).item() == pytest.approx(-1.0, abs=1e-6)  # a cosine: scale-free

    x, t, labels = torch.randn(2, 1, 8, 8), torch.tensor([10, 500]), torch.tensor([0, 3])
    unet(x, t, class_labels=labels)
    value = loss(types.SimpleNamespace(indices=torch.tensor([4, 1])))
    assert value.shape == () and -1 <= value.item() <= 1
    value.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in loss.projector.parameters())
    assert all(p.grad is not None for p in block.parameters() if p.requires_grad)
    assert any(p.grad.abs().sum() > 0 for p in unet.down_blocks.parameters())  # through the block, upstream
    assert all(p.grad is None for p in unet.up_blocks.parameters())  # downstream of the block: untouched
    assert loss.hidden is None  # each step's output is used once

    with torch.no_grad():  # sampling: the hook keeps nothing
        unet.eval()(x, t, class_labels=labels)
    assert loss.hidden is None


def test_vit_features_at_the_block_grid():
    ctx = tiny_context(None)
    vit = build_vit("vit_tiny_patch16_224", 32, pretrained=False)  # random weights: only the shapes matter
    maps = vit_feature_maps(vit, ctx.train_images[:3], ctx.data, batch_size=2)
    assert maps.shape == (3, vit.embed_dim, 2, 2)  # 32 / 16 patches a side
    assert to_grid(maps, (4, 4)).shape == (3, 16, vit.embed_dim)
    assert to_grid(maps, (2, 2)).shape == (3, 4, vit.embed_dim)


def teacher_attach(tmp_path):
    ctx = tiny_context(tmp_path / "run", "method=d2c", f"cache.dir={tmp_path / 'cache'}")
    evaluator = build(ctx.cfg.evaluator, "evaluator")
    assert evaluator.roles == ("judge", "teacher")  # the teacher is prepared because the encoder needs it
    return ctx, evaluator.attach


def test_teacher_features_are_computed_once_and_then_read_from_the_cache(tmp_path, monkeypatch):
    ctx, attach = teacher_attach(tmp_path)
    computed = []
    maps = attach_module.teacher_feature_maps
    monkeypatch.setattr(attach_module, "teacher_feature_maps", lambda *a: computed.append(1) or maps(*a))
    images = ctx.train_images[:6]
    first = attach.visual_targets(images, (2, 2), ctx)
    assert first.shape == (6, 4, 128) and attach.cost["visual"]["from_cache"] is False
    second = attach.visual_targets(images, (2, 2), ctx)
    assert computed == [1] and attach.cost["visual"]["from_cache"] is True and torch.equal(first, second)
    attach.visual_targets(ctx.train_images[:5], (2, 2), ctx)  # other images: another entry
    assert computed == [1, 1]


def test_apply_installs_the_dc_embedding_and_an_alignment_loss(tmp_path):
    ctx, attach = teacher_attach(tmp_path)
    unet = build_unet(UNET, 1, 10, (8, 8))
    pixels, images = torch.randn(4, 1, 8, 8), ctx.train_images[:4]
    losses = attach.apply(unet, pixels, images, ctx)
    assert isinstance(unet.class_embedding, DCEmbedding) and not unet.class_embedding.has_text  # smoke: encoder none
    assert len(losses) == 1 and losses[0].targets.shape[:2] == (4, 16) and losses[0].weight == 0.5
    out = unet(pixels, torch.tensor([1, 2, 3, 4]), class_labels=torch.tensor([0, 1, 9, 10])).sample  # 10: null
    assert out.shape == pixels.shape


def tiny_t5_folder(folder):
    """A tiny random T5 encoder and a word-level tokenizer that knows the captions' words, saved like a hub
    model (``from_pretrained`` reads the folder; nothing is downloaded)."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "</s>", "<unk>", "a", "photo", "of", *map(str, range(10))]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                         unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=len(words), d_model=12, d_kv=4, d_ff=16, num_layers=1, num_heads=2)
    transformers.T5EncoderModel(config).save_pretrained(folder)
    return folder


def test_d2c_end_to_end_with_a_tiny_t5_and_the_teacher(tmp_path):
    folder = tiny_t5_folder(tmp_path / "t5")
    overrides = (*D2C, "budget.d2c_text_encoder=t5", f"evaluator.attach.semantic.t5_model={folder}",
                 f"cache.dir={tmp_path / 'cache'}")
    results = execute(compose(*overrides), tmp_path / "run")
    assert results["status"] == "evaluated" and results["method"] == "d2c"
    assert set(METRICS) <= set(results["metrics"])
    semantic, visual = results["attach"]["semantic"], results["attach"]["visual"]
    assert semantic["encoder"] == f"t5: {folder}" and semantic["dim"] == 12 and semantic["from_cache"] is False
    assert visual["encoder"].startswith("teacher: roles.teacher (convnet) feature map after features[")
    assert visual["from_cache"] is False and visual["block"] == "mid_block"

    again = execute(compose(*overrides), tmp_path / "again")  # the text and image features come from the cache
    assert again["attach"]["semantic"]["from_cache"] is True and again["attach"]["visual"]["from_cache"] is True
    for name in METRICS:
        assert again["metrics"][name]["runs"] == pytest.approx(results["metrics"][name]["runs"], rel=1e-5, abs=1e-7)


def test_d2c_and_attach_only_run_offline_with_the_stand_ins(tmp_path):
    results = execute(compose(*D2C, f"cache.dir={tmp_path / 'cache'}"), tmp_path / "d2c")
    assert set(results["metrics"]) == {f"{m}@{n}" for m in METRICS for n in (2, 4)} | set(METRICS)
    assert results["primary_metric"]["name"] == "fid_held_out"
    assert results["attach"]["semantic"].startswith("DC-Embedding without text (encoder none)")
    assert "stand-in for DINOv2" in results["attach"]["visual"]["encoder"]
    assert {"diffusion", "judge", "teacher"} <= set(results["roles"])
    only = execute(compose(*TINY, "method=d2c_attach_only", "ipc=2", f"cache.dir={tmp_path / 'cache'}"),
                   tmp_path / "only")
    assert only["method"] == "d2c_attach_only" and "diffusion" not in only["roles"]  # no Select, no scorer
    assert only["attach"]["visual"]["from_cache"] is False  # another subset: its own features


@pytest.mark.parametrize("override,key,start", [
    ("budget.d2c_visual_encoder=dinov2", "evaluator.attach.visual.encoder", "dinov2: cannot build timm's"),
    ("budget.d2c_text_encoder=t5", "evaluator.attach.semantic.encoder", "t5: "),
])
def test_a_missing_encoder_is_one_line_before_anything_trains(tmp_path, override, key, start):
    out = distillkit("run", *D2C, override, f"hydra.run.dir={tmp_path / 'run'}", f"cache.dir={tmp_path / 'cache'}",
                     env={"HF_HUB_OFFLINE": "1"})  # the hub's own switch: fail at once instead of retrying
    assert out.returncode == 2 and "Traceback" not in out.stderr + out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"distillkit: error: {key}: {start}"), lines
    assert lines[0].endswith(f"(set by {override.split('=')[0]})")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").glob("classifier/*/spec.json"))
    assert not (tmp_path / "run" / "distilled.safetensors").exists()


def test_bad_attach_settings_are_one_line(capsys):
    assert cli.main(["run", *D2C, "evaluator.attach.visual.block=down_blocks.7"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("distillkit: error: evaluator.attach.visual.block: must be one of the denoiser's blocks, "
                          "down_blocks.0, ")
    assert cli.main(["run", *D2C, "evaluator.attach.semantic.kernel_size=2"]) == 2
    assert capsys.readouterr().err.strip() == "distillkit: error: evaluator.attach.semantic.kernel_size: must be odd (got 2)"
