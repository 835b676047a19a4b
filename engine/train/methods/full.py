"""Full fine-tune: every UNet weight trains (and the text encoder's, if asked), with optional EMA.

Trained modules stay in fp32 (mixed precision autocasts the forward pass); the frozen VAE (and text
encoder) move to the mixed-precision dtype. With `train.ema`, a diffusers `EMAModel` shadows the
trained parameters; samples and exports swap the EMA weights in and the training weights back after.
Exports: the whole pipeline as a diffusers folder and an original-SD single `.safetensors`.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch

from engine.train import export
from engine.train.methods.base import ExportInfo, Method


class FullMethod(Method):
    name = "full"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.ema = None

    @property
    def trains_text_encoder(self) -> bool:
        return self.cfg.full.train_text_encoder

    def setup(self) -> None:
        self.freeze_all()
        device = self.accelerator.device
        self.move_frozen(self.vae)
        self.unet.to(device, dtype=torch.float32).requires_grad_(True).train()
        if self.trains_text_encoder:
            self.text_encoder.to(device, dtype=torch.float32).requires_grad_(True).train()
        else:
            self.move_frozen(self.text_encoder)
        if self.cfg.train.ema:
            from diffusers.training_utils import EMAModel

            self.ema = EMAModel(self.trainable_parameters(), decay=self.cfg.train.ema_decay, foreach=True)

    def parameter_groups(self) -> list[dict[str, Any]]:
        groups = [{"params": [p for p in self.unet.parameters() if p.requires_grad], "lr": self.lr()}]
        if self.trains_text_encoder:
            groups.append({"params": [p for p in self.text_encoder.parameters() if p.requires_grad],
                           "lr": self.lr(text_encoder=True)})
        return groups

    def after_optimizer_step(self) -> None:
        if self.ema is not None:
            self.ema.step(self.trainable_parameters())

    @contextlib.contextmanager
    def inference_weights(self) -> Iterator[None]:
        if self.ema is None:
            yield
            return
        params = self.trainable_parameters()
        self.ema.store(params)
        self.ema.copy_to(params)
        try:
            yield
        finally:
            self.ema.restore(params)

    def export(self, folder: Path, info: ExportInfo) -> list[str]:
        files = []
        if "diffusers" in info.formats:
            files.append(export.save_pipeline_folder(folder, self.components, self.unet, self.text_encoder))
        if "single_file" in info.formats:
            files.append(export.save_full_single_file(folder, info, self.unet, self.vae, self.text_encoder))
        return files

    # --- resume: EMA shadows travel with the trained weights ----------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        state = super().trainable_state()
        if self.ema is not None:
            for name, shadow in zip(self.named_trainable(), self.ema.shadow_params):
                state[f"ema.{name}"] = shadow
        return state

    def load_trainable_state(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_trainable_state(tensors)
        if self.ema is not None:
            with torch.no_grad():
                for name, shadow in zip(self.named_trainable(), self.ema.shadow_params):
                    shadow.copy_(tensors[f"ema.{name}"].to(shadow.device, shadow.dtype))

    def method_state(self) -> dict[str, Any]:
        state = super().method_state()
        if self.ema is not None:
            state["ema_optimization_step"] = self.ema.optimization_step
            state["ema_cur_decay_value"] = self.ema.cur_decay_value
        return state

    def load_method_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().load_method_state(state, tensors)
        if self.ema is not None:
            self.ema.optimization_step = int(state.get("ema_optimization_step", 0))
            self.ema.cur_decay_value = state.get("ema_cur_decay_value")
