"""Export formats: what a checkpoint folder holds for people and other tools to load.

- LoRA, diffusers/PEFT keys: `pytorch_lora_weights.safetensors`, loadable with
  `StableDiffusionPipeline.load_lora_weights(folder)`; the PEFT adapter config (rank, alpha, targets) is
  stored in the file's metadata so diffusers scales it right when alpha != rank.
- LoRA, kohya/A1111 keys: `<run-id>-<checkpoint>.safetensors` with `lora_unet_…`/`lora_te_…` module
  names, `.lora_down.weight`/`.lora_up.weight`/`.alpha`, and kohya's `ss_*` training metadata
  (AUTOMATIC1111, ComfyUI, SD.Next and InvokeAI read these). A pivotal run bundles its embedding into
  this file as `bundle_emb.<name>.string_to_param.*` (see engine/train/methods/pivotal.py).
- Full fine-tune: `diffusers/` (the whole pipeline, `from_pretrained`-loadable) and
  `<run-id>-<checkpoint>.safetensors` (original-SD key layout, via `engine.train.models.save_single_file`).
"""
from __future__ import annotations

import json
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import torch

from engine.train.checkpoint import write_tensors

LORA_DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"
PIPELINE_DIR = "diffusers"


def tunelab_version() -> str:
    try:
        return importlib_metadata.version("tunelab")
    except importlib_metadata.PackageNotFoundError:
        return "0.1.0"


def single_file_name(info: Any) -> str:
    return f"{info.run_id}-{info.checkpoint}.safetensors"


# ---------------------------------------------------------------------------------------------
# LoRA


def save_lora_diffusers(folder: Path, unet: torch.nn.Module, text_encoder: torch.nn.Module | None) -> str:
    """`pytorch_lora_weights.safetensors` with diffusers keys, plus the adapter configs as metadata."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    unet_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    kwargs: dict[str, Any] = dict(unet_lora_layers=_cpu(unet_layers),
                                  unet_lora_adapter_metadata=unet.peft_config["default"].to_dict())
    if text_encoder is not None:
        te_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(text_encoder))
        kwargs.update(text_encoder_lora_layers=_cpu(te_layers),
                      text_encoder_lora_adapter_metadata=text_encoder.peft_config["default"].to_dict())
    StableDiffusionPipeline.save_lora_weights(folder, safe_serialization=True, weight_name=LORA_DIFFUSERS_FILE,
                                              **kwargs)
    return LORA_DIFFUSERS_FILE


def kohya_state_dict(unet: torch.nn.Module, text_encoder: torch.nn.Module | None) -> dict[str, torch.Tensor]:
    """kohya-ss key layout for SD 1.x: `lora_unet_<module path with _>.lora_down.weight` etc., with each
    module's own alpha (diffusers' `convert_state_dict_to_kohya` writes alpha = rank, which is wrong
    whenever lora.alpha != lora.rank)."""
    from peft.utils import get_peft_model_state_dict

    out: dict[str, torch.Tensor] = {}
    parts = [("lora_unet_", unet)] + ([("lora_te_", text_encoder)] if text_encoder is not None else [])
    for prefix, model in parts:
        config = model.peft_config["default"]
        for key, value in get_peft_model_state_dict(model).items():
            module, kind = _split_lora_key(key)
            if prefix == "lora_te_" and not module.startswith("text_model."):
                # transformers 5 dropped CLIPTextModel's `text_model.` level; kohya/A1111 names keep it.
                module = "text_model." + module
            name = prefix + module.replace(".", "_")
            out[f"{name}.{kind}.weight"] = value.detach().to("cpu", torch.float32).contiguous()
            if kind == "lora_down":
                rank = value.shape[0]
                alpha = config.alpha_pattern.get(module, config.lora_alpha) if config.alpha_pattern else config.lora_alpha
                out[f"{name}.alpha"] = torch.tensor(float(alpha) if alpha else float(rank))
    return out


def _split_lora_key(key: str) -> tuple[str, str]:
    """`down_blocks.0.….to_q.lora_A.weight` → (`down_blocks.0.….to_q`, `lora_down`)."""
    for peft_name, kohya_name in ((".lora_A.weight", "lora_down"), (".lora_B.weight", "lora_up")):
        if key.endswith(peft_name):
            return key[: -len(peft_name)], kohya_name
    raise ValueError(f"unexpected LoRA key {key!r}")


def kohya_metadata(info: Any, *, rank: int, alpha: float, text_encoder: bool, dropout: float) -> dict[str, str]:
    """kohya-ss `ss_*` training metadata (all values strings, as in sd-scripts)."""
    meta = {
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": _num(alpha),
        "ss_network_dropout": _num(dropout),
        "ss_base_model_version": "sd_v1",
        "ss_sd_model_name": info.base_model,
        "ss_resolution": f"({info.resolution}, {info.resolution})",
        "ss_epoch": str(info.epoch),
        "ss_steps": str(info.step),
        "ss_num_train_images": str(info.images),
        "ss_learning_rate": _num(info.learning_rate),
        "ss_seed": str(info.seed),
        "ss_network_train_unet_only": "False" if text_encoder else "True",
        "ss_training_comment": f"tunelab run {info.run_id}, checkpoint {info.checkpoint}",
        "ss_output_name": f"{info.run_id}-{info.checkpoint}",
        "tunelab_version": info.tunelab_version,
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.title": f"{info.run_id}-{info.checkpoint}",
    }
    meta.update({k: str(v) for k, v in info.extra.items()})
    return meta


def save_lora_kohya(folder: Path, info: Any, unet: torch.nn.Module, text_encoder: torch.nn.Module | None,
                    *, rank: int, alpha: float, dropout: float, bundled: dict[str, torch.Tensor] | None = None) -> str:
    """`bundled`: extra tensors written into the same file (pivotal tuning's embedding, `bundle_emb.*`)."""
    name = single_file_name(info)
    meta = kohya_metadata(info, rank=rank, alpha=alpha, text_encoder=text_encoder is not None, dropout=dropout)
    tensors = kohya_state_dict(unet, text_encoder)
    tensors.update(bundled or {})
    write_tensors(folder / name, tensors, metadata=meta)
    return name


# ---------------------------------------------------------------------------------------------
# Full fine-tune


def inference_scheduler(components: Any) -> Any:
    """The base model's own sampling scheduler (its scheduler/ config), else PNDM over the training schedule."""
    import diffusers

    config_dir = getattr(components, "config_dir", None)
    config_file = Path(config_dir) / "scheduler" / "scheduler_config.json" if config_dir else None
    if config_file is not None and config_file.is_file():
        config = json.loads(config_file.read_text(encoding="utf-8"))
        cls = getattr(diffusers, config.get("_class_name", "PNDMScheduler"), diffusers.PNDMScheduler)
        return cls.from_config(config)
    return diffusers.PNDMScheduler.from_config(components.noise_scheduler.config)


def save_pipeline_folder(folder: Path, components: Any, unet: torch.nn.Module, text_encoder: torch.nn.Module) -> str:
    """The whole pipeline as a diffusers folder (safetensors), loadable with `from_pretrained`."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=components.vae, text_encoder=text_encoder, tokenizer=components.tokenizer, unet=unet,
        scheduler=inference_scheduler(components), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder / PIPELINE_DIR, safe_serialization=True)
    return PIPELINE_DIR


def save_full_single_file(folder: Path, info: Any, unet: torch.nn.Module, vae: torch.nn.Module,
                          text_encoder: torch.nn.Module) -> str:
    from engine.train.models import save_single_file

    name = single_file_name(info)
    save_single_file(unet, vae, text_encoder, folder / name, dtype=torch.float32)
    return name


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous() for k, v in state.items()}


def _num(x: float) -> str:
    return repr(float(x)) if float(x) != int(x) else str(int(x))
