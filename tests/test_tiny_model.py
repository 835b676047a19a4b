"""The tiny offline SD 1.x model: what it is built from, and that its pictures are pictures."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from engine.train import tiny  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _quiet_pipeline(folder: Path):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(
        folder, safety_checker=None, requires_safety_checker=False, local_files_only=True
    )


def _state_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_every_demo_word_is_a_single_token_and_unknown_words_still_tokenize():
    tok = tiny.build_tokenizer()
    for word in tiny.WORDS:
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    ids = tok("a zebra").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.unk_token_id not in ids[1:-1]  # spelled out from letters, not dropped
    assert tok.convert_ids_to_tokens(ids[1:-1])[0] == "a</w>"


def test_textual_inversion_can_add_a_token_to_the_tokenizer():
    tok = tiny.build_tokenizer()
    before = len(tok)
    assert tok.add_tokens(["<my-thing>"]) == 1
    ids = tok("a <my-thing> toy", add_special_tokens=False).input_ids
    assert len(tok) == before + 1 and before in ids and len(ids) == 3


def test_the_vae_reconstructs_coloured_shapes_with_their_colours(tiny_base):
    from diffusers import AutoencoderKL

    vae = AutoencoderKL.from_pretrained(tiny_base, subfolder="vae", local_files_only=True)
    images, _, _ = tiny.draw_shapes(32, torch.Generator().manual_seed(7))
    with torch.no_grad():
        latents = vae.encode(images * 2 - 1).latent_dist.mean
        recon = ((vae.decode(latents).sample + 1) / 2).clamp(0, 1)
    assert latents.shape == (32, 4, 16, 16)
    error = (recon - images).abs()
    assert error.mean() < 0.06
    # the colour of each picture survives, not just its layout
    assert (recon.mean((2, 3)) - images.mean((2, 3))).abs().max() < 0.02
    # where the picture is flat (inside the shape, the background) the colour is exact
    flat = (torch.nn.functional.avg_pool2d(images, 5, 1, 2) - images).abs().sum(1) < 1e-3
    assert error.sum(1)[flat].mean() < 0.01
    # latents are scaled to roughly unit variance, as SD's scaling factor does for SD's VAE
    assert 0.5 < (latents * vae.config.scaling_factor).std() < 2.0


def test_base_samples_are_pictures_of_a_shape_on_a_plain_background(tiny_base):
    pipe = _quiet_pipeline(tiny_base)
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator().manual_seed(s) for s in range(4)]
    out = pipe(["a circle"] * 4, num_inference_steps=20, guidance_scale=5.0, generator=gens,
               height=64, width=64, output_type="pt").images
    assert out.shape == (4, 3, 64, 64)
    # decoded noise jumps from pixel to pixel; a picture is mostly flat
    jumps = (out[:, :, 1:, :] - out[:, :, :-1, :]).abs().mean()
    assert jumps < 0.03
    # a light background, as in the training pictures, with something else in the middle
    ring = torch.ones(64, 64, dtype=torch.bool)
    ring[6:-6, 6:-6] = False
    border = out[:, :, ring].mean(2)  # (4 images, rgb)
    assert (border.mean(1) > 0.5).all()
    centre = out[:, :, 24:40, 24:40].mean((2, 3))
    assert ((centre - border).abs().sum(1) > 0.15).float().mean() >= 0.5


def test_builds_from_the_same_seed_are_identical_and_other_seeds_differ():
    a = tiny.build_tiny_pipeline(seed=3, pretrain=False)
    b = tiny.build_tiny_pipeline(seed=3, pretrain=False)
    c = tiny.build_tiny_pipeline(seed=4, pretrain=False)
    for name in ("unet", "vae", "text_encoder"):
        assert _state_equal(getattr(a, name), getattr(b, name)), name
    assert not _state_equal(a.unet, c.unet)
    # building leaves the global torch state as it was
    assert not torch.are_deterministic_algorithms_enabled()


@pytest.mark.slow
def test_a_pretrained_build_is_reproducible(tiny_base):
    from diffusers import UNet2DConditionModel

    rebuilt = tiny.build_tiny_pipeline(seed=0)
    cached = UNet2DConditionModel.from_pretrained(tiny_base, subfolder="unet", local_files_only=True)
    assert _state_equal(rebuilt.unet, cached)


def test_ensure_tiny_builds_once_into_the_cache(tmp_path, monkeypatch):
    calls = []
    real = tiny.save_tiny

    def cheap_save(out_dir, **kw):
        calls.append(out_dir)
        return real(out_dir, **{**kw, "pretrain": False})

    monkeypatch.setattr(tiny, "save_tiny", cheap_save)
    first = tiny.ensure_tiny(tmp_path / "cache")
    second = tiny.ensure_tiny(tmp_path / "cache")
    assert first == second and (first / "model_index.json").is_file()
    assert len(calls) == 1
    # nothing half-built is left beside it
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == [first.name]


def test_the_default_cache_follows_tunelab_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TUNELAB_CACHE", str(tmp_path))
    assert tiny.default_cache_dir() == tmp_path / f"tiny-sd-v{tiny.TINY_VERSION}"
    monkeypatch.delenv("TUNELAB_CACHE")
    assert tiny.default_cache_dir() == Path("~/.cache/tunelab").expanduser() / f"tiny-sd-v{tiny.TINY_VERSION}"


def test_the_command_line_writes_a_diffusers_folder_and_an_original_sd_single_file(tmp_path):
    from safetensors import safe_open

    out, single = tmp_path / "tiny", tmp_path / "tiny.safetensors"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-m", "engine.train.tiny", str(out), "--single-file", str(single), "--no-pretrain"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (out / sub).is_dir(), sub
    assert not list(out.rglob("*.bin"))  # safetensors only
    with safe_open(single, "pt") as f:
        keys = set(f.keys())
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys
    assert "model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight" in keys
    assert "first_stage_model.decoder.up.0.block.0.conv1.weight" in keys
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in keys
    assert "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight" in keys
    assert not any(k.startswith(("unet.", "down_blocks.")) for k in keys)
