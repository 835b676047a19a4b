"""What a training method is: a small object the loop asks four questions.

1. Which parameters train? (`setup`, `parameter_groups`, `trained_modules`)
2. How is the loss formed? (`loss`; the default is the per-example MSE, weighted by min-SNR)
3. How is a checkpoint exported? (`export`, inside `inference_weights()` so EMA weights are used)
4. How is it loaded back for resume? (`trainable_state` / `load_trainable_state`, `method_state`)

Adding a method means one file in this package and one line in `methods/__init__.py`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from engine.config import RunConfig


@dataclass
class ExportInfo:
    """Everything an export may want to record about where its weights came from."""

    run_id: str
    checkpoint: str  # e0005-s00001200
    epoch: int
    step: int
    base_model: str
    base_source: str
    resolution: int
    images: int
    seed: int
    learning_rate: float
    formats: list[str]
    tunelab_version: str
    config_dir: Path | None
    extra: dict[str, Any] = field(default_factory=dict)


class Method:
    """Base class. Subclasses set `name` and override what differs; components live on `self`."""

    name = "base"

    def __init__(self, cfg: RunConfig, components: Any, accelerator: Any, weight_dtype: torch.dtype):
        self.cfg = cfg
        self.components = components
        self.accelerator = accelerator
        self.weight_dtype = weight_dtype
        self.unet = components.unet
        self.text_encoder = components.text_encoder
        self.vae = components.vae
        self.tokenizer = components.tokenizer

    # --- 1. which parameters train ------------------------------------------------------------
    @property
    def trains_text_encoder(self) -> bool:
        """True when the text encoder's output changes during training (no text caching then)."""
        return False

    def setup(self) -> None:
        """Freeze what does not train, add adapters, move everything to the device in the right dtype."""
        raise NotImplementedError

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimiser parameter groups, each with its `lr`."""
        raise NotImplementedError

    def trained_modules(self) -> list[torch.nn.Module]:
        """Modules whose parameters train; the loop passes them to `accelerator.prepare` (DDP)."""
        return [self.unet] + ([self.text_encoder] if self.trains_text_encoder else [])

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for g in self.parameter_groups() for p in g["params"]]

    def after_optimizer_step(self) -> None:
        """Called once per optimiser step (EMA updates)."""

    # --- hooks for methods that change the data or the step (defaults: nothing) -----------------
    def prepare_data(self, examples: Any, *, project_dir: Path, events: Any) -> None:
        """Before `setup`, on the base model: change the `ExampleSet`'s captions or add examples
        (DreamBooth's instance prompt and class images, textual inversion's placeholder)."""

    def examples_ready(self, examples: list[Any], *, events: Any) -> None:
        """After caching, the training examples as the loop indexes them (images that could not be
        decoded are gone, so positions may differ from `prepare_data`'s)."""

    def batch_indices(self, indices: list[int], *, step: int, micro: int) -> list[int]:
        """The examples a micro-batch trains on, given the epoch plan's (DreamBooth adds class images).
        `step` is the number of optimiser steps done, `micro` the micro-batch within the step."""
        return indices

    def begin_step(self, step: int, *, total_steps: int, events: Any) -> None:
        """Before each optimiser step; `step` steps are done (pivotal tuning switches phase here)."""

    def before_optimizer_step(self) -> None:
        """After backward, before clipping and the optimiser step (drop gradients that must not apply)."""

    # --- 2. the loss ------------------------------------------------------------------------
    def loss(self, model_pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None,
             batch: Any) -> torch.Tensor:
        per_example = F.mse_loss(model_pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if weights is not None:
            per_example = per_example * weights
        return per_example.mean()

    # --- 3. exports ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def inference_weights(self) -> Iterator[None]:
        """The weights samples and exports use (EMA when on); the training weights are back after."""
        yield

    def export(self, folder: Path, info: ExportInfo) -> list[str]:
        """Write the checkpoint's user-facing files into `folder`; returns their names."""
        raise NotImplementedError

    # --- 4. resume --------------------------------------------------------------------------
    def named_trainable(self) -> dict[str, torch.nn.Parameter]:
        out = {f"unet.{n}": p for n, p in self.unet.named_parameters() if p.requires_grad}
        if self.trains_text_encoder:
            out.update({f"text_encoder.{n}": p for n, p in self.text_encoder.named_parameters() if p.requires_grad})
        return out

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: p.detach() for k, p in self.named_trainable().items()}

    def load_trainable_state(self, tensors: dict[str, torch.Tensor]) -> None:
        params = self.named_trainable()
        missing = sorted(set(params) - set(tensors))
        if missing:
            raise ValueError(f"checkpoint state lacks {len(missing)} trained tensors (first: {missing[0]}); "
                             "was it saved by a different method or config?")
        with torch.no_grad():
            for name, p in params.items():
                p.copy_(tensors[name].to(p.device, p.dtype))

    def method_state(self) -> dict[str, Any]:
        return {"method": self.name}

    def load_method_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        if state.get("method", self.name) != self.name:
            raise ValueError(f"checkpoint was saved by method {state.get('method')!r}, this run is {self.name!r}")

    # --- helpers for subclasses -------------------------------------------------------------
    def freeze_all(self) -> None:
        for m in (self.unet, self.text_encoder, self.vae):
            m.requires_grad_(False)
            m.eval()

    def move_frozen(self, *modules: torch.nn.Module) -> None:
        device = self.accelerator.device
        for m in modules:
            m.to(device, dtype=self.weight_dtype)

    def lr(self, text_encoder: bool = False) -> float:
        t = self.cfg.train
        return (t.text_encoder_learning_rate or t.learning_rate) if text_encoder else t.learning_rate
