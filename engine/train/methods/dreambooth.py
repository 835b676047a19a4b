"""DreamBooth: teach one subject under an identifier (`a sks dog`) and keep its class (`a dog`) intact.

- Captions: `dreambooth.instance_prompt` for every instance image (empty: the concepts' own captions;
  a warning when some are empty, or when the instance prompt is the class prompt).
- Prior preservation (`dreambooth.prior_preservation`): `num_class_images` pictures of the class prompt
  drawn by the base model before training (`engine.train.prior`, cached under `.cache/prior/` and reused
  by later runs). They join the training examples with no repeats, so the epoch plan never draws them;
  instead every instance example in a micro-batch brings one class example (chosen by the position in
  training, so a resume picks the same ones), and the loss is
  `instance MSE + dreambooth.prior_loss_weight × class MSE`, as in diffusers' train_dreambooth scripts.
- Weights: `dreambooth.weights = "lora"` trains what `lora` trains ([lora]), `"full"` what `full` trains
  ([full], with EMA if asked); exports are theirs. `DreamBoothMethod(cfg, …)` returns a
  `DreamBoothLora` or a `DreamBoothFull`: the DreamBooth parts are in `DreamBoothMethod`, the weights'
  parts come from `LoraMethod` / `FullMethod` by inheritance.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from engine.train.methods.base import ExportInfo, Method
from engine.train.methods.full import FullMethod
from engine.train.methods.lora import LoraMethod

PRIOR_CONCEPT = ":class-images:"  # the concept name of class examples in a batch (no folder can be named so)


class DreamBoothMethod(Method):
    name = "dreambooth"

    def __new__(cls, cfg: Any, *args: Any, **kwargs: Any) -> "DreamBoothMethod":
        if cls is DreamBoothMethod:
            cls = DreamBoothFull if cfg.dreambooth.weights == "full" else DreamBoothLora
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.class_indices: list[int] = []  # rows of the training examples that are class images

    # --- data -------------------------------------------------------------------------------
    def prepare_data(self, examples: Any, *, project_dir: Path, events: Any) -> None:
        from engine.train.data import Example
        from engine.train.prior import class_images

        db = self.cfg.dreambooth
        if db.instance_prompt:
            for e in examples.train + examples.validation:
                e.caption = db.instance_prompt
        else:
            uncaptioned = [e.rel for e in examples.train if not e.caption.strip()]
            if uncaptioned:
                events.warning(f"dreambooth.instance_prompt is empty and {len(uncaptioned)} of {len(examples.train)} "
                               "training image(s) have no caption, so nothing ties the subject to a word; set "
                               "dreambooth.instance_prompt (e.g. \"a photo of sks dog\")", items=uncaptioned[:50])
        if db.prior_preservation and db.instance_prompt.strip().lower() == db.class_prompt.strip().lower():
            events.warning(f"dreambooth.instance_prompt is the class prompt ({db.class_prompt!r}): the class images "
                           "then pull the subject back to the class; put an identifier in the instance prompt "
                           "(e.g. \"a sks dog\" against \"a dog\")")
        if not db.prior_preservation:
            return
        paths = class_images(self.cfg, self.components, cache_root=Path(project_dir) / ".cache",
                             accelerator=self.accelerator, events=events)
        first = len(examples.train)
        examples.train.extend(Example(path=p, rel=str(p.relative_to(project_dir)) if p.is_relative_to(project_dir)
                                      else str(p), caption=db.class_prompt, concept=PRIOR_CONCEPT, repeats=0)
                              for p in paths)
        self.class_indices = list(range(first, first + len(paths)))  # until `examples_ready` finds them again

    def examples_ready(self, examples: list[Any], *, events: Any) -> None:
        """Find the class examples again: an instance image that could not be decoded shifts them."""
        if not self.cfg.dreambooth.prior_preservation:
            return
        expected = len(self.class_indices)
        self.class_indices = [i for i, e in enumerate(examples) if e.concept == PRIOR_CONCEPT]
        if len(self.class_indices) < expected:
            events.warning(f"{expected - len(self.class_indices)} of {expected} class image(s) could not be decoded"
                           + ("; training without prior preservation" if not self.class_indices else ""))

    def batch_indices(self, indices: list[int], *, step: int, micro: int) -> list[int]:
        """The micro-batch's instance examples followed by as many class examples. The k-th class
        example of a run is number k mod N, k counted over steps, micro-batches and processes."""
        if not self.class_indices:
            return indices
        t, acc = self.cfg.train, self.accelerator
        first = ((step * t.gradient_accumulation + micro) * acc.num_processes + acc.process_index) * t.batch_size
        n = len(self.class_indices)
        return indices + [self.class_indices[(first + j) % n] for j in range(len(indices))]

    # --- the loss ----------------------------------------------------------------------------
    def loss(self, model_pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None,
             batch: Any) -> torch.Tensor:
        per_example = F.mse_loss(model_pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
        if weights is not None:
            per_example = per_example * weights
        if PRIOR_CONCEPT not in batch.concepts:
            return per_example.mean()
        is_prior = [c == PRIOR_CONCEPT for c in batch.concepts]
        prior = torch.tensor(is_prior, dtype=per_example.dtype).to(per_example.device, non_blocking=True)
        instance_loss = (per_example * (1 - prior)).sum() / (len(is_prior) - sum(is_prior))
        prior_loss = (per_example * prior).sum() / sum(is_prior)
        return instance_loss + self.cfg.dreambooth.prior_loss_weight * prior_loss

    # --- exports ------------------------------------------------------------------------------
    def export(self, folder: Path, info: ExportInfo) -> list[str]:
        db = self.cfg.dreambooth
        info.extra.setdefault("ss_tunelab_method", self.name)
        info.extra.setdefault("ss_tunelab_instance_prompt", db.instance_prompt)
        if db.prior_preservation:
            info.extra.setdefault("ss_class_prompt", db.class_prompt)
            info.extra.setdefault("ss_reg_images_count", len(self.class_indices))
            info.extra.setdefault("ss_prior_loss_weight", db.prior_loss_weight)
        return super().export(folder, info)


class DreamBoothLora(DreamBoothMethod, LoraMethod):
    """DreamBooth training LoRA adapters ([lora])."""


class DreamBoothFull(DreamBoothMethod, FullMethod):
    """DreamBooth training the whole UNet ([full])."""
