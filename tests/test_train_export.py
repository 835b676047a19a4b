"""Every export loads back with diffusers and holds exactly the weights that were trained."""
from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from engine.train import checkpoint as ckpt
from engine.train.loop import train
from engine.train.tiny import ensure_tiny
from tests.train_fixtures import make_project, make_run, tiny_config

pytestmark = pytest.mark.timeout(300)


def _quiet_pipeline(path, **kw):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None, requires_safety_checker=False, **kw)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _strip_adapter(name: str) -> str:
    """`…to_q.lora_A.default_0.weight` / `…to_q.lora_A.default.weight` → `…to_q.lora_A.weight`."""
    parts = name.split(".")
    return ".".join(p for p in parts if not p.startswith("default"))


def _lora_weights(module) -> dict[str, torch.Tensor]:
    return {_strip_adapter(n): p.detach().float() for n, p in module.named_parameters() if "lora_" in n}


@pytest.fixture(scope="module")
def lora_checkpoint(tmp_path_factory):
    cfg = tiny_config(**{"train.epochs": 1, "lora.train_text_encoder": True, "lora.text_encoder_rank": 2})
    cfg.lora.rank, cfg.lora.alpha = 4, 2.0
    cfg.sample.at_start = False
    cfg.sample.prompts = []
    run = make_run(make_project(tmp_path_factory.mktemp("lora"), goals=False), cfg)
    assert train(run.path) == 0
    ck = run.latest_complete_checkpoint().path
    return ck, ckpt.read_state(ck).trainable


def test_lora_diffusers_export_loads_with_load_lora_weights(lora_checkpoint):
    ck, trained = lora_checkpoint
    pipe = _quiet_pipeline(ensure_tiny())
    pipe.load_lora_weights(ck)
    unet = _lora_weights(pipe.unet)
    te = _lora_weights(pipe.text_encoder)
    expected_unet = {_strip_adapter(k[len("unet."):]): v for k, v in trained.items() if k.startswith("unet.")}
    expected_te = {_strip_adapter(k[len("text_encoder."):]): v for k, v in trained.items()
                   if k.startswith("text_encoder.")}
    assert unet.keys() == expected_unet.keys() and len(unet) > 0
    assert te.keys() == expected_te.keys() and len(te) > 0
    for k in unet:
        torch.testing.assert_close(unet[k], expected_unet[k])
    for k in te:
        torch.testing.assert_close(te[k], expected_te[k])
    # alpha != rank survives: diffusers reads the adapter config from the file's metadata.
    config = next(iter(pipe.unet.peft_config.values()))
    assert (config.r, config.lora_alpha) == (4, 2.0)


def test_lora_kohya_export_has_a1111_keys_alpha_and_training_metadata(lora_checkpoint):
    ck, trained = lora_checkpoint
    (path,) = [p for p in ck.glob("*.safetensors") if p.name != "pytorch_lora_weights.safetensors"]
    with safe_open(str(path), "pt") as f:
        keys = set(f.keys())
        meta = f.metadata()
        alphas = {k: f.get_tensor(k) for k in keys if k.endswith(".alpha")}
        downs = {k: f.get_tensor(k) for k in keys if k.endswith(".lora_down.weight")}
    assert any(k.startswith("lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.") for k in keys)
    assert any(k.startswith("lora_te_text_model_encoder_layers_0_self_attn_q_proj.") for k in keys)
    assert all(k.endswith((".lora_down.weight", ".lora_up.weight", ".alpha")) for k in keys)
    unet_alpha = alphas["lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q.alpha"]
    assert float(unet_alpha) == 2.0
    assert float(alphas["lora_te_text_model_encoder_layers_0_self_attn_q_proj.alpha"]) == 1.0  # same scale
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "2" and meta["ss_epoch"] == "1"
    assert meta["ss_steps"] == "2" and meta["ss_resolution"] == "(32, 32)" and meta["ss_sd_model_name"] == "tiny"
    assert meta["ss_network_module"] == "networks.lora" and meta["tunelab_version"]
    name = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    torch.testing.assert_close(downs[f"lora_unet_{name.replace('.', '_')}.lora_down.weight"],
                               trained[f"unet.{name}.lora_A.default.weight"].float())
    # diffusers reads kohya files too; the loaded LoRA is the trained one.
    pipe = _quiet_pipeline(ensure_tiny())
    pipe.load_lora_weights(str(path))
    loaded = _lora_weights(pipe.unet)
    torch.testing.assert_close(loaded[f"{name}.lora_A.weight"], trained[f"unet.{name}.lora_A.default.weight"])
    torch.testing.assert_close(loaded[f"{name}.lora_B.weight"], trained[f"unet.{name}.lora_B.default.weight"])
    assert next(iter(pipe.unet.peft_config.values())).lora_alpha == 2.0


@pytest.fixture(scope="module")
def full_checkpoint(tmp_path_factory):
    cfg = tiny_config(method="full", **{"train.epochs": 1, "train.ema": True, "train.ema_decay": 0.5,
                                        "train.learning_rate": 1e-3, "full.train_text_encoder": True})
    cfg.method = "full"
    cfg.sample.at_start = False
    cfg.sample.prompts = []
    run = make_run(make_project(tmp_path_factory.mktemp("full"), goals=False), cfg)
    assert train(run.path) == 0
    ck = run.latest_complete_checkpoint().path
    return ck, ckpt.read_state(ck).trainable


def test_full_export_is_a_diffusers_folder_holding_the_ema_weights(full_checkpoint):
    ck, state = full_checkpoint
    pipe = _quiet_pipeline(ck / "diffusers")
    unet = dict(pipe.unet.named_parameters())
    differs = 0
    for name, p in unet.items():
        torch.testing.assert_close(p.detach(), state[f"ema.unet.{name}"].float())
        differs += not torch.equal(state[f"ema.unet.{name}"], state[f"unet.{name}"])
    assert differs > 0  # the export is the EMA, not the raw training weights
    _assert_text_encoder_is_the_trained_ema(pipe, state)


def _assert_text_encoder_is_the_trained_ema(pipe, state):
    loaded = {n.removeprefix("text_model."): p for n, p in pipe.text_encoder.named_parameters()}
    trained = {k[len("ema.text_encoder."):].removeprefix("text_model."): v for k, v in state.items()
               if k.startswith("ema.text_encoder.")}
    assert trained and loaded.keys() == trained.keys()
    base = {n.removeprefix("text_model."): p for n, p in _quiet_pipeline(ensure_tiny()).text_encoder.named_parameters()}
    assert any(not torch.equal(base[k].detach(), trained[k].float()) for k in trained)  # it did train
    for name, p in loaded.items():
        torch.testing.assert_close(p.detach(), trained[name].float())


def test_full_export_single_file_loads_with_from_single_file(full_checkpoint):
    from diffusers import StableDiffusionPipeline

    ck, state = full_checkpoint
    (path,) = ck.glob("*.safetensors")
    pipe = StableDiffusionPipeline.from_single_file(str(path), config=str(ensure_tiny()), local_files_only=True,
                                                    safety_checker=None, requires_safety_checker=False)
    for name, p in pipe.unet.named_parameters():
        torch.testing.assert_close(p.detach(), state[f"ema.unet.{name}"].float())
    _assert_text_encoder_is_the_trained_ema(pipe, state)
