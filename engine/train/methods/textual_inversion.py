"""Textual inversion: learn the embedding of a new placeholder token; every model weight stays frozen.

The placeholder (`textual_inversion.placeholder_token`, e.g. `<concept>`) gets `num_vectors` new tokens
in the tokenizer, named the way diffusers names multi-vector embeddings: `<concept>`, `<concept>_1`, …
Captions that say `<concept>` are expanded to `<concept> <concept>_1 …` for training; sample prompts
are expanded by the diffusers pipeline itself (`maybe_convert_prompt`), so the contact sheet uses the
placeholder as a user would. Captions that lack the placeholder get it prepended (with a warning):
without it an image teaches the embedding nothing. An image with no caption trains on the placeholder
alone, with no warning: textual inversion needs no captions (`engine.placeholder.with_placeholder`,
which `tunelab check` applies too).

Only the new vectors train. They live in a small fp32 parameter (`PlaceholderEmbedding.vectors`)
that the text encoder's token-embedding layer substitutes for the placeholder ids, so the rest of the
embedding table is not a parameter at all: it cannot drift, the optimiser state is (vectors × width),
and resume restores exactly the vectors (the default `trainable_state`).

Exports (see DESIGN.md, checkpoint folders):
- `diffusers`: `learned_embeds.safetensors`, `{placeholder: (num_vectors, width)}`, loadable with
  `pipe.load_textual_inversion(path, token=placeholder)` (which re-creates the `_1`… tokens);
- `single_file`: an A1111 embedding `<placeholder, filename-safe>.safetensors` holding one tensor
  `emb_params` (num_vectors, width), the sd-scripts layout that AUTOMATIC1111, ComfyUI and diffusers
  read (A1111's `string_to_param` dict exists only in pickled `.pt` files; a safetensors embedding is a
  single tensor). In A1111 the file name is the prompt word: rename the file to choose it.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from engine.placeholder import (expand_placeholder, mentions_placeholder, placeholder_names, tokenizer_problems,
                                with_placeholder)
from engine.train.checkpoint import write_tensors
from engine.train.methods.base import ExportInfo, Method

DIFFUSERS_EMBEDDING_FILE = "learned_embeds.safetensors"
A1111_KEY = "emb_params"
KOHYA_BUNDLE_PREFIX, KOHYA_BUNDLE_SUFFIX = "bundle_emb.", ".string_to_param.*"  # an embedding inside a LoRA file


class PlaceholderEmbedding(torch.nn.Embedding):
    """The text encoder's token embedding with the placeholder rows taken from a trainable parameter.

    `weight` is the (frozen) table it replaces, shared, not copied; `vectors` (num_vectors, width) is
    what trains; `slots` maps a token id to its row in `vectors` (-1: not a placeholder).
    """

    def __init__(self, base: torch.nn.Embedding, token_ids: list[int], init: torch.Tensor):
        super().__init__(base.num_embeddings, base.embedding_dim, padding_idx=base.padding_idx,
                         _weight=base.weight.data, _freeze=True)
        slots = torch.full((base.num_embeddings,), -1, dtype=torch.long, device=base.weight.device)
        slots[torch.tensor(token_ids, device=base.weight.device)] = torch.arange(len(token_ids),
                                                                                  device=base.weight.device)
        self.register_buffer("slots", slots, persistent=False)
        self.vectors = torch.nn.Parameter(init.detach().clone().to(base.weight.device, torch.float32))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        embeds = super().forward(input_ids)
        slot = self.slots[input_ids]
        learned = self.vectors[slot.clamp(min=0)].to(embeds.dtype)
        return torch.where((slot >= 0).unsqueeze(-1), learned, embeds)


class PlaceholderTokens:
    """The placeholder's tokens, their trainable vectors, and the embedding files. Shared by the
    `textual_inversion` and `pivotal` methods."""

    def __init__(self, cfg: Any, tokenizer: Any):
        ti = cfg.textual_inversion
        self.token = ti.placeholder_token
        self.names = placeholder_names(self.token, ti.num_vectors)
        self.tokenizer = tokenizer
        problems = tokenizer_problems(ti, tokenizer.get_vocab(),
                                      lambda text: len(tokenizer.encode(text, add_special_tokens=False)))
        if problems:  # the same rules `tunelab run` checks before launch, where the tokenizer is on disk
            raise ValueError("; ".join(f"{key} {message}" for key, message in problems))
        init_ids = tokenizer.encode(ti.initializer_token, add_special_tokens=False)
        self.initializer_id = init_ids[0]
        self.embedding: PlaceholderEmbedding | None = None

    # --- captions ---------------------------------------------------------------------------
    def expand(self, text: str) -> str:
        """`a <concept> dog` → `a <concept> <concept>_1 dog` (as diffusers' `maybe_convert_prompt`)."""
        return expand_placeholder(text, self.token, len(self.names))

    def prepare_examples(self, examples: Any, events: Any) -> None:
        """Every training caption mentions the placeholder (prepended where missing), expanded."""
        lacking = [e for e in examples.train if e.caption and not mentions_placeholder(e.caption, self.token)]
        if lacking:
            events.warning(f"{len(lacking)} of {len(examples.train)} training image(s) have a caption that does not contain "
                           f"textual_inversion.placeholder_token {self.token!r}; it is prepended to them "
                           f"(e.g. {with_placeholder(lacking[0].caption, self.token)!r})",
                           items=[e.rel for e in lacking[:50]])
        for e in examples.train + examples.validation:
            e.caption = self.expand(with_placeholder(e.caption, self.token))

    def check_sample_prompts(self, cfg: Any, project_dir: Path, events: Any) -> None:
        """Warn when no sample prompt says the placeholder: the contact sheet would not show it."""
        from engine.config import sample_prompts
        from engine.project import load_project_file

        prompts = sample_prompts(cfg, load_project_file(project_dir).goals.as_dict())
        if prompts and not any(mentions_placeholder(p.text, self.token) for p in prompts):
            events.warning(f"no sample prompt contains textual_inversion.placeholder_token {self.token!r}, so the "
                           "samples will not show what it learns; add it to sample.prompts or the project's goals")

    # --- the trainable vectors ----------------------------------------------------------------
    def install(self, text_encoder: Any, device: torch.device) -> torch.nn.Parameter:
        """Add the tokens, grow the embedding table, and put a `PlaceholderEmbedding` in its place,
        its vectors initialised from the initializer token. Call after the text encoder is on its
        device and in its dtype (the vectors stay fp32)."""
        self.tokenizer.add_tokens(self.names)
        ids = self.tokenizer.convert_tokens_to_ids(self.names)
        text_encoder.resize_token_embeddings(len(self.tokenizer), mean_resizing=False)
        base = text_encoder.get_input_embeddings()
        with torch.no_grad():
            init_row = base.weight[self.initializer_id].detach().clone()
            base.weight[torch.tensor(ids, device=base.weight.device)] = init_row  # what the table says, unused
        self.embedding = PlaceholderEmbedding(base, ids, init_row.unsqueeze(0).repeat(len(ids), 1).to(device))
        text_encoder.set_input_embeddings(self.embedding)
        return self.embedding.vectors

    @property
    def vectors(self) -> torch.nn.Parameter:
        assert self.embedding is not None, "install() first"
        return self.embedding.vectors

    # --- exports ------------------------------------------------------------------------------
    def a1111_file_name(self) -> str:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "", self.token).strip("._-") or "embedding"
        return f"{stem}.safetensors" if stem != Path(DIFFUSERS_EMBEDDING_FILE).stem else f"{stem}-a1111.safetensors"

    def bundle_name(self) -> str:
        """The word A1111 knows an embedding bundled in a LoRA by: the A1111 file's name (`a1111_file_name`,
        `<my-cat>` → `my-cat`), with dots made `_` (A1111 splits `bundle_emb.<name>.…` at dots)."""
        return re.sub(r"[^A-Za-z0-9_-]+", "", self.token.replace(".", "_")).strip("_-") or "embedding"

    def kohya_bundle(self) -> dict[str, torch.Tensor]:
        """The embedding as kohya/A1111 bundle it in a LoRA file: `bundle_emb.<name>.string_to_param.*`,
        (num_vectors, width) — what A1111's Lora extension loads as an embedding (a `.pt` embedding's
        `string_to_param` dict, key `*`) and ComfyUI finds with the LoRA file in its embeddings folder."""
        vectors = self.vectors.detach().to("cpu", torch.float32).contiguous()
        return {f"{KOHYA_BUNDLE_PREFIX}{self.bundle_name()}{KOHYA_BUNDLE_SUFFIX}": vectors}

    def export(self, folder: Path, info: ExportInfo) -> list[str]:
        vectors = self.vectors.detach().to("cpu", torch.float32).contiguous()
        meta = {"format": "pt", "placeholder_token": self.token, "tokens": " ".join(self.names),
                "num_vectors": str(len(self.names)), "base_model": info.base_model, "step": str(info.step),
                "epoch": str(info.epoch), "tunelab_run": info.run_id, "tunelab_checkpoint": info.checkpoint,
                "tunelab_version": info.tunelab_version}
        files = []
        if "diffusers" in info.formats:
            write_tensors(folder / DIFFUSERS_EMBEDDING_FILE, {self.token: vectors}, metadata=meta)
            files.append(DIFFUSERS_EMBEDDING_FILE)
        if "single_file" in info.formats:
            name = self.a1111_file_name()
            write_tensors(folder / name, {A1111_KEY: vectors}, metadata={**meta, "name": Path(name).stem})
            files.append(name)
        return files


class TextualInversionMethod(Method):
    name = "textual_inversion"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.tokens = PlaceholderTokens(self.cfg, self.tokenizer)

    @property
    def trains_text_encoder(self) -> bool:
        return True  # its output changes: no text caching, gradients flow into it

    def prepare_data(self, examples: Any, *, project_dir: Path, events: Any) -> None:
        self.tokens.prepare_examples(examples, events)
        self.tokens.check_sample_prompts(self.cfg, project_dir, events)

    def setup(self) -> None:
        self.freeze_all()
        self.move_frozen(self.unet, self.text_encoder, self.vae)
        self.tokens.install(self.text_encoder, self.accelerator.device)

    def parameter_groups(self) -> list[dict[str, Any]]:
        return [{"params": [self.tokens.vectors], "lr": self.lr()}]

    def export(self, folder: Path, info: ExportInfo) -> list[str]:
        return self.tokens.export(folder, info)
