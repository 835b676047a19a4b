"""Pivotal tuning: textual inversion first, then LoRA on top of the learned embedding.

For the first `pivotal.ti_fraction` of the optimiser steps only the placeholder's vectors train (as in
`textual_inversion`); from then on the UNet's LoRA (and the text encoder's, with
`lora.train_text_encoder`) trains, with the vectors frozen or still training
(`pivotal.train_embeddings_after_switch`). The switch comes after `round(ti_fraction × steps)` steps,
kept to at least one step for each phase. A `phase` event marks the start of each phase, and a resumed
process emits one for the phase it resumes in (with `resumed_at`, the step it resumed at).

Everything that will ever train is in the optimiser and requires grad from the first step, so the
set of trained parameters never changes under DDP; what must not move in a phase has its gradients
dropped before the optimiser step (AdamW then skips it entirely: no update, no weight decay, no
moments). The phase is a function of the step alone, so a resume on either side of the switch, or at
it, continues exactly. The LoRA parts reuse `LoraMethod`; the embedding parts `PlaceholderTokens`.

Exports: the LoRA (diffusers/PEFT and kohya keys, as `lora`) and the embedding (diffusers and A1111, as
`textual_inversion`); load both to reproduce the samples. With `pivotal.bundle_embedding` (the default)
the kohya file also holds the embedding, as `bundle_emb.<name>.string_to_param.*` (kohya/A1111's bundled
embedding: A1111 loads it with the LoRA, so `<lora:FILE:1> a photo of <name>` needs no second file);
`<name>` is the A1111 embedding file's name. diffusers' `load_lora_weights` refuses a kohya file with
keys it does not know, so diffusers users load `pytorch_lora_weights.safetensors` (or set
`bundle_embedding = false`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from engine.train.methods.base import ExportInfo, Method
from engine.train.methods.lora import LoraMethod
from engine.train.methods.textual_inversion import PlaceholderTokens

TI_PHASE = "textual_inversion"
LORA_PHASE = "lora"


class PivotalMethod(Method):
    name = "pivotal"
    _announced = False  # set by the first begin_step of a process

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.tokens = PlaceholderTokens(self.cfg, self.tokenizer)
        self.lora = LoraMethod(*args, **kwargs)
        self.phase = TI_PHASE

    @property
    def trains_text_encoder(self) -> bool:
        return True

    switched_at: int | None = None  # the step the LoRA phase began, once it has (kept in the checkpoint)

    def switch_step(self, total_steps: int) -> int:
        """Optimiser steps trained as textual inversion: `ti_fraction` of them, rounded, and at least one
        for each phase when there are two steps or more. Once the switch has happened it stays where it
        was, also when a resume changes the run's length (`tunelab resume --set train.epochs=…`): the
        phase never goes back to textual inversion."""
        if self.switched_at is not None:
            return self.switched_at
        if total_steps < 2:
            return total_steps
        return min(total_steps - 1, max(1, round(self.cfg.pivotal.ti_fraction * total_steps)))

    # --- which parameters train -------------------------------------------------------------
    def prepare_data(self, examples: Any, *, project_dir: Path, events: Any) -> None:
        self.tokens.prepare_examples(examples, events)
        self.tokens.check_sample_prompts(self.cfg, project_dir, events)

    def setup(self) -> None:
        self.lora.setup()
        self.tokens.install(self.text_encoder, self.accelerator.device)

    def lora_groups(self) -> list[dict[str, Any]]:
        """LoRA's groups without the vectors (its text-encoder group takes every trainable parameter of
        the text encoder, and the vectors are one since `install`)."""
        groups = []
        for g in self.lora.parameter_groups():
            params = [p for p in g["params"] if p is not self.tokens.vectors]
            if params:
                groups.append({**g, "params": params})
        return groups

    def lora_parameters(self) -> list[torch.nn.Parameter]:
        return [p for g in self.lora_groups() for p in g["params"]]

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The LoRA at its learning rates, the vectors at pivotal.embedding_learning_rate."""
        return self.lora_groups() + [{"params": [self.tokens.vectors], "lr": self.cfg.pivotal.embedding_learning_rate}]

    def begin_step(self, step: int, *, total_steps: int, events: Any) -> None:
        switch = self.switch_step(total_steps)
        self.phase = TI_PHASE if step < switch else LORA_PHASE
        if self.phase == LORA_PHASE:
            self.switched_at = switch
        first, self._announced = not self._announced, True
        frozen = not self.cfg.pivotal.train_embeddings_after_switch
        lora_message = (f"the embedding of {self.tokens.token!r} is {'frozen' if frozen else 'still training'}")
        if step == 0:
            events.emit("phase", phase=TI_PHASE, step=step, until_step=switch,
                        message=f"pivotal tuning: textual inversion for steps 1-{switch}")
            events.say(f"pivotal tuning: training the embedding of {self.tokens.token!r} for {switch} of "
                       f"{total_steps} steps, then LoRA")
            if switch >= total_steps:
                events.warning(f"pivotal tuning: this run has {total_steps} step(s), all of them textual inversion, "
                               "so the LoRA never trains; train more steps (train.epochs) or use method = "
                               "\"textual_inversion\"")
        elif step == switch and switch < total_steps:
            message = f"pivotal tuning: switching to LoRA at step {step + 1}; {lora_message}"
            events.emit("phase", phase=LORA_PHASE, step=step, embeddings_frozen=frozen, message=message)
            events.say(message)
        elif first:  # resumed inside a phase: say which (the phase event names where the phase began)
            if self.phase == TI_PHASE:
                message = (f"pivotal tuning: resumed at step {step + 1} in textual inversion, which lasts "
                           f"to step {switch}")
                events.emit("phase", phase=TI_PHASE, step=0, until_step=switch, resumed_at=step, message=message)
            else:
                message = (f"pivotal tuning: resumed at step {step + 1} in the LoRA phase (since step "
                           f"{switch + 1}); {lora_message}")
                events.emit("phase", phase=LORA_PHASE, step=switch, embeddings_frozen=frozen, resumed_at=step,
                            message=message)
            events.say(message)

    def before_optimizer_step(self) -> None:
        if self.phase == TI_PHASE:
            dropped = self.lora_parameters()
        else:
            dropped = [] if self.cfg.pivotal.train_embeddings_after_switch else [self.tokens.vectors]
        for p in dropped:
            p.grad = None

    # --- exports ------------------------------------------------------------------------------
    def export(self, folder: Path, info: ExportInfo) -> list[str]:
        info.extra.setdefault("ss_tunelab_method", self.name)
        info.extra.setdefault("ss_tunelab_placeholder_token", self.tokens.token)
        bundled = None
        if self.cfg.pivotal.bundle_embedding:
            bundled = self.tokens.kohya_bundle()
            info.extra.setdefault("ss_tunelab_bundled_embedding", self.tokens.bundle_name())
        return self.lora.export(folder, info, bundled=bundled) + self.tokens.export(folder, info)

    def method_state(self) -> dict[str, Any]:
        state = {**super().method_state(), "phase": self.phase}
        if self.switched_at is not None:
            state["switched_at"] = self.switched_at
        return state

    def load_method_state(self, state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
        super().load_method_state(state, tensors)
        if isinstance(state.get("switched_at"), int):
            self.switched_at = state["switched_at"]
