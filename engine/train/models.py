"""Loading `model.base` into trainable components, and writing original-SD single-file checkpoints.

`engine.basemodel` decides what a spec names (light, no torch); this module loads it:
- a diffusers folder, or a hub id's snapshot in the local HF cache: each component from its subfolder,
  safetensors only;
- a single-file `.safetensors` checkpoint (original-SD "ldm" key names): through diffusers'
  `from_single_file`, with component configs from `model.config` (a diffusers folder or cached hub id)
  or, without one, whatever diffusers finds in the local cache; never the network;
- `tiny` / `tiny:SEED`: `engine.train.tiny.ensure_tiny()`, then as a diffusers folder.

`save_single_file` is the reverse conversion (diffusers → ldm keys) that full fine-tunes export and the
tiny model's single-file form uses; `from_single_file` reads it back.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine import atomic
from engine.basemodel import (
    ACCEPTED_FORMS,
    BaseModelError,
    BaseSpec,
    check_base,
    describe_base,
    resolve_base,
    resolve_config,
)

__all__ = [
    "ACCEPTED_FORMS",
    "BaseModelError",
    "Components",
    "check_base",
    "describe_base",
    "ldm_state_dict",
    "load_components",
    "resolve_model_folder",
    "save_single_file",
]

PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass
class Components:
    """Everything a trainer needs from the base model. Models are in eval mode with no grad; the
    method decides what to unfreeze."""

    tokenizer: Any  # transformers.CLIPTokenizer
    text_encoder: Any  # transformers.CLIPTextModel
    vae: Any  # diffusers.AutoencoderKL
    unet: Any  # diffusers.UNet2DConditionModel
    noise_scheduler: Any  # diffusers.DDPMScheduler over the base's training schedule
    prediction_type: str  # "epsilon" or "v_prediction"
    source: str  # describe(): which form and where it came from
    config_dir: Path | None  # the diffusers folder the configs came from (for pipelines / exports)


def resolve_model_folder(spec: str, project_dir: str | os.PathLike, log=None) -> tuple[BaseSpec, Path]:
    """The resolved spec and the file or folder to load (building the tiny model if needed, with
    progress lines to `log` so a first run's ~90 s build does not look like a hang)."""
    resolved = resolve_base(spec, project_dir)
    if resolved.kind == "tiny":
        from engine.train.tiny import ensure_tiny

        path = ensure_tiny(seed=resolved.seed, log=log)
        return BaseSpec(resolved.spec, "tiny", path, resolved.seed), path
    assert resolved.path is not None
    return resolved, resolved.path


def load_components(
    spec: str,
    project_dir: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    prediction_type: str | None = None,
    config: str | None = None,
    log=None,
) -> Components:
    """Load the base model `spec` (see `engine.basemodel`) with every model in `dtype`.

    `prediction_type` None or "auto" takes the base scheduler's; "epsilon"/"v_prediction" override it
    (e.g. an SD 2.x-v single file whose config cannot say). `config` is `model.config`, used only for
    single-file bases. Raises `BaseModelError` with a message naming the spec and the accepted forms.
    """
    if prediction_type not in (None, "auto", *PREDICTION_TYPES):
        raise BaseModelError(
            f"model.prediction_type = {prediction_type!r}: must be auto, epsilon or v_prediction"
        )
    resolved, path = resolve_model_folder(spec, project_dir, log)
    if resolved.kind == "single_file":
        config_dir = resolve_config(config, project_dir) if config else None
        parts = _load_single_file(spec, path, config_dir, dtype)
    else:
        config_dir = path
        parts = _load_folder(spec, path, dtype)
    tokenizer, text_encoder, vae, unet, scheduler_config = parts

    from diffusers import DDPMScheduler

    base_type = scheduler_config.get("prediction_type") or "epsilon"
    resolved_type = base_type if prediction_type in (None, "auto") else prediction_type
    noise_scheduler = DDPMScheduler.from_config(scheduler_config, prediction_type=resolved_type)
    for model in (text_encoder, vae, unet):
        model.eval().requires_grad_(False)
    return Components(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        unet=unet,
        noise_scheduler=noise_scheduler,
        prediction_type=resolved_type,
        source=resolved.describe() if resolved.kind != "tiny" else f"{resolved.describe()} at {path}",
        config_dir=config_dir,
    )


def _load_folder(spec: str, folder: Path, dtype: torch.dtype):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    try:
        tokenizer = CLIPTokenizer.from_pretrained(folder, subfolder="tokenizer", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(
            folder, subfolder="text_encoder", dtype=dtype, use_safetensors=True, local_files_only=True
        )
        vae = AutoencoderKL.from_pretrained(
            folder, subfolder="vae", torch_dtype=dtype, use_safetensors=True, local_files_only=True
        )
        unet = UNet2DConditionModel.from_pretrained(
            folder, subfolder="unet", torch_dtype=dtype, use_safetensors=True, local_files_only=True
        )
        scheduler_config = dict(DDPMScheduler.load_config(folder, subfolder="scheduler", local_files_only=True))
    except (OSError, ValueError, EnvironmentError) as e:
        raise BaseModelError(
            f"model.base = {spec!r}: cannot load the diffusers folder {folder}: {_first_line(e)} "
            f"(tunelab loads .safetensors weights only; {ACCEPTED_FORMS})"
        ) from e
    return tokenizer, text_encoder, vae, unet, scheduler_config


def _load_single_file(spec: str, path: Path, config_dir: Path | None, dtype: torch.dtype):
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import logging as dlogging

    kwargs: dict[str, Any] = dict(local_files_only=True, torch_dtype=dtype,
                                  safety_checker=None, requires_safety_checker=False)
    if config_dir is not None:
        kwargs["config"] = str(config_dir)
    verbosity = dlogging.get_verbosity()
    dlogging.set_verbosity_error()
    try:
        pipe = StableDiffusionPipeline.from_single_file(str(path), **kwargs)
    except Exception as e:  # diffusers raises many types here; all mean "cannot load this file"
        wanted = _uncached_config_repo(e, path) if config_dir is None else None
        if wanted:
            raise BaseModelError(
                f"model.base = {spec!r}: cannot load the single-file checkpoint {path}: without model.config, "
                f"diffusers takes its component configs from {wanted} (the model it takes this file for), which "
                f"is not in the local Hugging Face cache, and tunelab never downloads. Set model.config to a "
                f"diffusers folder (or a cached hub id) with this model's configs, e.g. the base it was "
                f"fine-tuned from; or fetch them where there is network (`huggingface-cli download {wanted} "
                f"--include '*.json' '*.txt'`) and copy the cache here"
            ) from e
        hint = (
            "" if config_dir is not None else
            " Set model.config to a diffusers folder (or a cached hub id) with the matching component "
            "configs; without it diffusers needs the default SD config in the local cache."
        )
        raise BaseModelError(
            f"model.base = {spec!r}: cannot load the single-file checkpoint {path}: {_first_line(e)}.{hint}"
        ) from e
    finally:
        dlogging.set_verbosity(verbosity)
    return pipe.tokenizer, pipe.text_encoder, pipe.vae, pipe.unet, dict(pipe.scheduler.config)


def _uncached_config_repo(error: BaseException, path: Path) -> str | None:
    """The hub repo whose configs diffusers looked for (and did not find in the cache) when it failed to
    load the single file `path` without `model.config`; None when the failure was something else."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    chain, e = [], error
    while e is not None and len(chain) < 10:
        chain.append(e)
        e = e.__cause__ or e.__context__
    if not any(isinstance(x, (LocalEntryNotFoundError, OfflineModeIsEnabled)) for x in chain):
        return None
    try:
        import json
        import struct
        from types import SimpleNamespace

        from diffusers.loaders.single_file_utils import fetch_diffusers_config

        with open(path, "rb") as f:  # the safetensors header: tensor names and shapes, no weights
            header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
        shapes = {k: SimpleNamespace(shape=tuple(v["shape"])) for k, v in header.items() if k != "__metadata__"}
        return str(fetch_diffusers_config(shapes)["pretrained_model_name_or_path"])
    except Exception:  # noqa: BLE001 - only the message's detail is lost
        return "the default SD config"


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# ---------------------------------------------------------------------------------------------
# diffusers -> original SD ("ldm") key names. The layout is derived from the models' configs, so it
# fits any SD 1.x/2.x-shaped UNet and VAE (the reference script in diffusers hard-codes SD's four
# blocks of two layers).


def _unet_ldm_map(unet) -> dict[str, str]:
    """diffusers UNet key prefix -> ldm prefix (without the `model.diffusion_model.` root)."""
    cfg = unet.config
    n_layers = cfg.layers_per_block
    prefixes: dict[str, str] = {}
    n = 1  # input_blocks.0 is conv_in
    for i, block in enumerate(unet.down_blocks):
        for j in range(n_layers):
            prefixes[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{n}.0."
            if getattr(block, "attentions", None) is not None:
                prefixes[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{n}.1."
            n += 1
        if getattr(block, "downsamplers", None) is not None:
            prefixes[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{n}.0.op."
            n += 1
    prefixes["mid_block.resnets.0."] = "middle_block.0."
    prefixes["mid_block.attentions.0."] = "middle_block.1."
    prefixes["mid_block.resnets.1."] = "middle_block.2."
    m = 0
    for i, block in enumerate(unet.up_blocks):
        has_attn = getattr(block, "attentions", None) is not None
        for j in range(n_layers + 1):
            prefixes[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{m}.0."
            if has_attn:
                prefixes[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{m}.1."
            if j == n_layers and getattr(block, "upsamplers", None) is not None:
                prefixes[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{m}.{2 if has_attn else 1}."
            m += 1
    return prefixes


_UNET_TOP = {
    "time_embedding.linear_1.": "time_embed.0.",
    "time_embedding.linear_2.": "time_embed.2.",
    "conv_in.": "input_blocks.0.0.",
    "conv_norm_out.": "out.0.",
    "conv_out.": "out.2.",
}
_UNET_RESNET = {
    "norm1.": "in_layers.0.",
    "conv1.": "in_layers.2.",
    "norm2.": "out_layers.0.",
    "conv2.": "out_layers.3.",
    "time_emb_proj.": "emb_layers.1.",
    "conv_shortcut.": "skip_connection.",
}
_VAE_ATTN = {
    "group_norm.": "norm.",
    "to_q.": "q.",
    "to_k.": "k.",
    "to_v.": "v.",
    "to_out.0.": "proj_out.",
}


def _replace_prefix(key: str, table: dict[str, str]) -> str | None:
    # Longest prefix first, so "down_blocks.1.resnets.1." never matches "down_blocks.1.resnets.10.".
    for old in sorted(table, key=len, reverse=True):
        if key.startswith(old):
            return table[old] + key[len(old):]
    return None


def _unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    blocks = _unet_ldm_map(unet)
    out = {}
    for key, value in unet.state_dict().items():
        new = _replace_prefix(key, _UNET_TOP)
        if new is None:
            prefix = next((p for p in sorted(blocks, key=len, reverse=True) if key.startswith(p)), None)
            if prefix is None:
                raise ValueError(f"no original-SD name for UNet weight {key}")
            rest = key[len(prefix):]
            if ".resnets." in prefix:
                rest = _replace_prefix(rest, _UNET_RESNET) or rest
            new = blocks[prefix] + rest
        out["model.diffusion_model." + new] = value
    return out


def _vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    n_up = len(vae.decoder.up_blocks)
    table = {"encoder.conv_norm_out.": "encoder.norm_out.", "decoder.conv_norm_out.": "decoder.norm_out."}
    for side in ("encoder", "decoder"):
        for k in range(2):
            table[f"{side}.mid_block.resnets.{k}."] = f"{side}.mid.block_{k + 1}."
        table[f"{side}.mid_block.attentions.0."] = f"{side}.mid.attn_1."
    for i, block in enumerate(vae.encoder.down_blocks):
        for j in range(len(block.resnets)):
            table[f"encoder.down_blocks.{i}.resnets.{j}."] = f"encoder.down.{i}.block.{j}."
        table[f"encoder.down_blocks.{i}.downsamplers.0."] = f"encoder.down.{i}.downsample."
    for i, block in enumerate(vae.decoder.up_blocks):
        for j in range(len(block.resnets)):
            table[f"decoder.up_blocks.{i}.resnets.{j}."] = f"decoder.up.{n_up - 1 - i}.block.{j}."
        table[f"decoder.up_blocks.{i}.upsamplers.0."] = f"decoder.up.{n_up - 1 - i}.upsample."
    out = {}
    for key, value in vae.state_dict().items():
        prefix = next((p for p in sorted(table, key=len, reverse=True) if key.startswith(p)), None)
        if prefix is None:
            new = key  # conv_in/out, quant_conv, post_quant_conv keep their names
        else:
            rest = key[len(prefix):]
            if table[prefix].endswith(".mid.attn_1."):
                rest = _replace_prefix(rest, _VAE_ATTN) or rest
                if value.ndim == 2:
                    value = value[:, :, None, None]  # ldm's VAE attention uses 1x1 convs
            else:
                rest = rest.replace("conv_shortcut.", "nin_shortcut.")
            new = table[prefix] + rest
        out["first_stage_model." + new] = value
    return out


def ldm_state_dict(unet, vae, text_encoder) -> dict[str, torch.Tensor]:
    """The three models' weights under original-SD 1.x key names (as in an A1111/ComfyUI checkpoint)."""
    state = {**_unet_to_ldm(unet), **_vae_to_ldm(vae)}
    for key, value in text_encoder.state_dict().items():
        # transformers 5 drops the `text_model.` level from CLIPTextModel's own state dict; SD
        # checkpoints (and diffusers' single-file loader) keep it.
        if not key.startswith("text_model."):
            key = "text_model." + key
        state["cond_stage_model.transformer." + key] = value
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def save_single_file(unet, vae, text_encoder, path: str | os.PathLike, *, dtype: torch.dtype | None = None) -> Path:
    """Write an original-SD single-file `.safetensors` checkpoint atomically; returns its path."""
    from safetensors.torch import save

    state = ldm_state_dict(unet, vae, text_encoder)
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_bytes(path, save(state, metadata={"format": "pt", "written_by": "tunelab"}))
    return path
