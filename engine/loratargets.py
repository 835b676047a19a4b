"""Which `lora.target_modules` names can adapt something in an SD 1.x/2.x UNet, decided without torch.

peft matches each name of a list against a module's full name: equal to it, or its end after a dot
(`to_q` matches `…attn1.to_q`; `attn2.to_k` and `mid_block.attentions.0.proj_in` work too), and it can
wrap only `Linear` and `Conv2d` layers here: a name that also matches a norm, a dropout or a whole block
(`norm1`, `to_out`, `attn1`) makes `add_adapter` fail, and a name that matches nothing is ignored — or,
when no name matches, fails ~8 s into the run after the base has loaded. `tunelab check` (through
`engine.launch.prelaunch_check`) calls `target_problems` so those mistakes are caught before launch.

The module names below are those of diffusers' `UNet2DConditionModel` as every SD 1.x/2.x base (and the
tiny model) builds it, with block indices as `*` (which index exists is not checked).
`tests/test_lora_targets.py` regenerates them from real UNets, so this list cannot drift from diffusers.
"""
from __future__ import annotations

import difflib
from typing import Iterable

KEY = "lora.target_modules"

_ATTENTION = ("to_q", "to_k", "to_v", "to_out.0")
_TRANSFORMER_LAYERS = tuple(f"{a}.{p}" for a in ("attn1", "attn2") for p in _ATTENTION) + ("ff.net.0.proj", "ff.net.2")
_TRANSFORMER_OTHER = ("attn1", "attn2", "attn1.to_out", "attn2.to_out", "attn1.to_out.1", "attn2.to_out.1", "ff",
                      "ff.net", "ff.net.0", "ff.net.1", "norm1", "norm2", "norm3")
_RESNET_LAYERS = ("conv1", "conv2", "time_emb_proj")
_RESNET_OTHER = ("dropout", "nonlinearity", "norm1", "norm2")


def _unet_modules() -> tuple[frozenset[str], frozenset[str]]:
    """(Linear/Conv2d layers, every other module) of the UNet, as full names with `*` for indices."""
    layers = {"conv_in", "conv_out", "time_embedding.linear_1", "time_embedding.linear_2",
              "up_blocks.*.upsamplers.*.conv", "down_blocks.*.downsamplers.*.conv"}
    other = {"conv_act", "conv_norm_out", "time_embedding", "time_embedding.act", "time_proj", "mid_block",
             "down_blocks.*.downsamplers", "down_blocks.*.downsamplers.*",
             "up_blocks.*.upsamplers", "up_blocks.*.upsamplers.*"}
    for top in ("down_blocks", "up_blocks"):
        other |= {top, f"{top}.*"}
    for block in ("down_blocks.*", "mid_block", "up_blocks.*"):
        att, res = f"{block}.attentions", f"{block}.resnets"
        other |= {att, f"{att}.*", f"{att}.*.norm", f"{att}.*.transformer_blocks", f"{att}.*.transformer_blocks.*",
                  res, f"{res}.*"}
        layers |= {f"{att}.*.proj_in", f"{att}.*.proj_out"}
        layers |= {f"{att}.*.transformer_blocks.*.{n}" for n in _TRANSFORMER_LAYERS}
        other |= {f"{att}.*.transformer_blocks.*.{n}" for n in _TRANSFORMER_OTHER}
        layers |= {f"{res}.*.{n}" for n in _RESNET_LAYERS + (() if block == "mid_block" else ("conv_shortcut",))}
        other |= {f"{res}.*.{n}" for n in _RESNET_OTHER}
    return frozenset(layers), frozenset(other)


UNET_LAYERS, UNET_OTHER_MODULES = _unet_modules()

# The short names that, together, reach every layer above (a test checks both): what errors offer.
ACCEPTED = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2",
            "conv_shortcut", "time_emb_proj", "conv", "conv_in", "conv_out", "linear_1", "linear_2")
ACCEPTED_TEXT = (
    "accepted: the end of a UNet module's name — to_q, to_k, to_v, to_out.0 (attention), proj_in, proj_out, "
    "ff.net.0.proj, ff.net.2 (transformer blocks), conv1, conv2, conv_shortcut, time_emb_proj (resnets), conv "
    "(down/upsamplers), conv_in, conv_out, linear_1, linear_2 (time embedding), or a longer end such as "
    "attn2.to_k or mid_block.attentions.0.proj_in"
)


def _matches(name: str, module: str) -> bool:
    """peft's rule (`key == name or key.endswith("." + name)`), with `*` standing for any index."""
    want, have = name.split("."), module.split(".")
    if len(want) > len(have):
        return False
    return all(w == h or (h == "*" and w.isdigit()) for w, h in zip(want, have[len(have) - len(want):]))


def matching(name: str, modules: Iterable[str]) -> list[str]:
    return sorted(m for m in modules if _matches(name, m))


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, ACCEPTED, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def target_problems(names: list[str]) -> tuple[list[str], list[str]]:
    """(errors, warnings) about `lora.target_modules`, each a message to print after the key.

    Errors: no name matches a layer (the trainer would fail), or a name also matches a module LoRA cannot
    wrap (peft would fail). Warnings: a name that matches nothing while others do (peft ignores it)."""
    errors: list[str] = []
    unmatched: list[str] = []
    for name in names:
        others = matching(name, UNET_OTHER_MODULES)
        if others:
            more = " (and others like it)" if len(others) > 1 else ""
            inner = _inner_layers(name)
            errors.append(f"{name!r} names {others[0].replace('*', '0')}{more}, which is no Linear or Conv2d layer: "
                          "peft adapts only those, so the run would fail"
                          + (f"; the layers inside it: {inner}" if inner else "") + f"; {ACCEPTED_TEXT}")
        elif not matching(name, UNET_LAYERS):
            unmatched.append(name)
    if not names or (len(unmatched) == len(names)):
        hint = "".join(_did_you_mean(n) for n in unmatched[:1])
        errors.append(f"= {list(names)}: {'no name matches any' if names else 'names no'} module of the "
                      f"base's UNet{hint}, so LoRA would adapt nothing and the run would fail; {ACCEPTED_TEXT}")
        return errors, []
    warnings = [f"{name!r} matches no module of the base's UNet, so it adapts nothing (the other names do)"
                f"{_did_you_mean(name)}; {ACCEPTED_TEXT}" for name in unmatched]
    return errors, warnings


def _inner_layers(name: str) -> str:
    """The layers under a block a name matched (`attn1` → `attn1.to_q`, …), for its error; "" for a leaf."""
    inner = set()
    for m in UNET_LAYERS:
        parts = m.split(".")
        for i in range(len(parts)):
            if _matches(name, ".".join(parts[:i])):
                inner.add(f"{name}.{'.'.join(parts[i:])}".replace("*", "0"))
                break
    return ", ".join(sorted(inner)[:6]) + (" …" if len(inner) > 6 else "")


def uses_lora(cfg) -> bool:
    """Whether the config's method trains the `[lora]` section's adapters."""
    from engine.config import used_method_sections

    return "lora" in used_method_sections(cfg)
