"""`lora.target_modules` is checked before launch (engine.loratargets), against module names that real UNets pin."""
from __future__ import annotations

import re

import pytest

from engine.loratargets import ACCEPTED, UNET_LAYERS, UNET_OTHER_MODULES, matching, target_problems
from tests.test_check_cli import check, project_with_config
from tui.cli import main

_INDEXED = re.compile(r"\b(down_blocks|up_blocks|attentions|resnets|transformer_blocks|downsamplers|upsamplers)\.\d+")
SD2 = dict(attention_head_dim=[5, 10, 20, 20], use_linear_projection=True, cross_attention_dim=1024)


def module_names(unet) -> tuple[set[str], set[str]]:
    """(Linear/Conv2d layers, other modules) of a real UNet, block indices as `*` like engine.loratargets."""
    from torch import nn

    layers, other = set(), set()
    for name, module in unet.named_modules():
        if name:
            (layers if isinstance(module, (nn.Linear, nn.Conv2d)) else other).add(_INDEXED.sub(r"\1.*", name))
    return layers, other


@pytest.mark.parametrize("kind", ["sd1", "sd2", "tiny"])
def test_the_static_module_names_are_those_of_diffusers_unets(kind):
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel

    from engine.train.tiny import _unet_config

    config = {"sd1": {}, "sd2": SD2, "tiny": _unet_config()}[kind]  # diffusers' defaults are SD 1.x's UNet
    with init_empty_weights():  # no weights allocated: the SD 1.5-sized UNet builds in a moment
        layers, other = module_names(UNet2DConditionModel(**config))
    assert (sorted(UNET_LAYERS), sorted(UNET_OTHER_MODULES)) == (sorted(layers), sorted(other))


def test_the_accepted_short_names_reach_every_layer_and_nothing_else():
    reached = {m for name in ACCEPTED for m in matching(name, UNET_LAYERS)}
    assert reached == set(UNET_LAYERS)
    assert [n for n in ACCEPTED if matching(n, UNET_OTHER_MODULES)] == []


NAMES = [["nope"], ["to_q", "nope"], ["norm1"], ["to_q", "norm1"], ["to_out"], ["attn1"], ["to_out.1"], ["attn1.to_q"],
         ["mid_block.attentions.0.transformer_blocks.0.attn1.to_q"], ["0.attn1.to_q"], ["time_proj"], ["ff.net.0"],
         ["conv", "linear_1", "ff.net.0.proj"]]


@pytest.mark.parametrize("names", NAMES, ids="+".join)
def test_the_light_verdict_is_what_peft_does_with_the_tiny_unet(names):
    """An error where add_adapter raises, a warning per name that adapts nothing where it does not."""
    import torch
    from diffusers import UNet2DConditionModel
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists

    from engine.train.tiny import _unet_config

    torch.manual_seed(0)
    unet = UNet2DConditionModel(**_unet_config())
    keys = [key for key, _ in unet.named_modules() if key]
    idle = [n for n in names if not any(check_target_module_exists(LoraConfig(target_modules=[n]), k) for k in keys)]
    errors, warnings = target_problems(names)
    try:
        unet.add_adapter(LoraConfig(r=2, target_modules=names))
    except ValueError:
        assert errors and not warnings
        return
    assert not errors
    assert [w.split("'")[1] for w in warnings] == idle


def test_check_refuses_a_target_that_matches_no_module_naming_key_name_and_what_is_accepted(tmp_path, capsys):
    p = project_with_config(tmp_path, '[lora]\ntarget_modules = ["nope"]\n')
    rc, _, err = check(capsys, p, "lora")
    assert rc == 1
    assert (f"{p / 'configs' / 'lora.toml'}:2: lora.target_modules = ['nope']: no name matches any module of the "
            "base's UNet") in err
    assert "accepted: the end of a UNet module's name — to_q, to_k, to_v, to_out.0" in err
    assert main(["run", str(p), "lora"]) == 2 and "lora.target_modules = ['nope']" in capsys.readouterr().err
    assert not (p / "runs").exists() or not any((p / "runs").iterdir())


def test_check_refuses_a_block_name_peft_cannot_wrap_and_names_the_layers_inside(tmp_path, capsys):
    p = project_with_config(tmp_path, "")
    rc, _, err = check(capsys, p, "lora", "--set", 'lora.target_modules=["to_q", "attn1"]')
    assert rc == 1
    assert "(--set): lora.target_modules: 'attn1' names down_blocks.0.attentions.0.transformer_blocks.0.attn1" in err
    assert "the layers inside it: attn1.to_k, attn1.to_out.0, attn1.to_q, attn1.to_v" in err


def test_a_name_that_matches_nothing_beside_good_ones_is_a_warning_with_a_did_you_mean(tmp_path, capsys):
    p = project_with_config(tmp_path, '[lora]\ntarget_modules = ["to_q", "to_kk"]\n')
    rc, out, err = check(capsys, p, "lora")
    assert rc == 0, err
    warnings = out.split("\nwarnings:\n", 1)[1]
    assert "lora.target_modules: 'to_kk' matches no module of the base's UNet, so it adapts nothing (the other " \
           "names do) (did you mean 'to_k'?)" in warnings


def test_methods_that_train_no_lora_do_not_check_its_targets(tmp_path, capsys):
    p = project_with_config(tmp_path, 'method = "full"\n[lora]\ntarget_modules = ["nope"]\n')
    assert check(capsys, p, "lora")[0] == 0
