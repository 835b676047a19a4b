"""LoRA: low-rank adapters on the UNet's attention projections (and optionally the text encoder's).

The base weights stay frozen (in the mixed-precision dtype); only the adapters train, in fp32.
Exports: diffusers/PEFT weights and a kohya/A1111 file (see `engine.train.export`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from engine.train import export
from engine.train.methods.base import ExportInfo, Method

TEXT_ENCODER_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]


class LoraMethod(Method):
    name = "lora"

    @property
    def trains_text_encoder(self) -> bool:
        return self.cfg.lora.train_text_encoder

    def setup(self) -> None:
        from diffusers.training_utils import cast_training_params
        from peft import LoraConfig

        lora = self.cfg.lora
        self.freeze_all()
        self.move_frozen(self.unet, self.text_encoder, self.vae)
        try:
            self.unet.add_adapter(LoraConfig(
                r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, init_lora_weights="gaussian",
                target_modules=list(lora.target_modules)))
        except ValueError as e:  # peft: no module matches
            raise ValueError(f"lora.target_modules = {list(lora.target_modules)}: {e} The UNet's attention "
                             "projections are to_q, to_k, to_v and to_out.0 (also e.g. proj_in, proj_out, "
                             "ff.net.0.proj, ff.net.2 for the feed-forward and projection layers)") from None
        self.unet.train()
        if self.trains_text_encoder:
            # The text encoder's LoRA gets the same scale (alpha / rank) as the UNet's.
            te_alpha = lora.alpha * lora.text_encoder_rank / lora.rank
            self.text_encoder.add_adapter(LoraConfig(
                r=lora.text_encoder_rank, lora_alpha=te_alpha, lora_dropout=lora.dropout,
                init_lora_weights="gaussian", target_modules=TEXT_ENCODER_TARGETS))
            self.text_encoder.train()
        # Trainable parameters in fp32 even under fp16/bf16 mixed precision.
        cast_training_params([self.unet, self.text_encoder])

    def parameter_groups(self) -> list[dict[str, Any]]:
        groups = [{"params": [p for p in self.unet.parameters() if p.requires_grad], "lr": self.lr()}]
        if self.trains_text_encoder:
            groups.append({"params": [p for p in self.text_encoder.parameters() if p.requires_grad],
                           "lr": self.lr(text_encoder=True)})
        return groups

    def export(self, folder: Path, info: ExportInfo, bundled: dict[str, Any] | None = None) -> list[str]:
        """`bundled`: tensors added to the kohya file only (pivotal tuning's `bundle_emb.*` embedding)."""
        te = self.text_encoder if self.trains_text_encoder else None
        files = []
        if "diffusers" in info.formats:
            files.append(export.save_lora_diffusers(folder, self.unet, te))
        if "single_file" in info.formats:
            lora = self.cfg.lora
            files.append(export.save_lora_kohya(folder, info, self.unet, te, rank=lora.rank, alpha=lora.alpha,
                                                dropout=lora.dropout, bundled=bundled))
        return files
