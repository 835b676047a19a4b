"""Automatic captions with BLIP ("a drawing of a pink cat flying through the air"). Heavy: torch + transformers.

Imported only by `tunelab caption PROJECT auto` (and the TUI's auto-caption action, in a worker).
The model comes from a local folder or a hub id already in the Hugging Face cache (`local_files_only`):
nothing is downloaded. The captions go through `engine.captions.plan_generated`, so auto-captioning
has the same dry run, only-missing default and undo as every other bulk operation.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image, ImageOps
from transformers import BlipForConditionalGeneration, BlipProcessor
from transformers.utils import logging as hf_logging

from engine.pixels import to_rgb

hf_logging.disable_progress_bar()  # tunelab prints its own "captioned n/N" lines


class AutoCaptionError(Exception):
    """The captioning model cannot be loaded or run; the message says what to do."""


def pick_device(device: str = "auto") -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class BlipCaptioner:
    """Callable: list of image paths → list of captions, one batch at a time."""

    def __init__(self, model: str | os.PathLike, device: str = "auto", max_new_tokens: int = 30,
                 prompt: str = "", dtype: torch.dtype | None = None):
        self.device = pick_device(device)
        self.max_new_tokens = max_new_tokens
        self.prompt = prompt.strip()
        if dtype is None:
            dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        source = str(model)
        try:
            self.processor = BlipProcessor.from_pretrained(source, local_files_only=True)
            self.model = BlipForConditionalGeneration.from_pretrained(source, local_files_only=True, dtype=dtype,
                                                                      use_safetensors=True)
        except (OSError, ValueError) as e:
            where = "folder" if Path(source).exists() else "hub id (not in the local Hugging Face cache?)"
            raise AutoCaptionError(
                f"cannot load BLIP from {source!r} as a {where}: {e}\n"
                "  Pass --model with a local BLIP folder, or download it where there is network "
                "(`huggingface-cli download Salesforce/blip-image-captioning-base`) and copy the cache over."
            ) from None
        self.model.to(self.device).eval()
        self.dtype = dtype

    @torch.inference_mode()
    def __call__(self, images: Sequence[str | os.PathLike]) -> list[str]:
        pil = []
        for p in images:
            with Image.open(p) as im:
                pil.append(to_rgb(ImageOps.exif_transpose(im)))  # the pixels training reads
        kwargs = {"images": pil, "return_tensors": "pt"}
        if self.prompt:
            kwargs["text"] = [self.prompt] * len(pil)
        inputs = self.processor(**kwargs)
        inputs = {k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
                  for k, v in inputs.items() if hasattr(v, "to")}
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        return [t.strip() for t in self.processor.batch_decode(out, skip_special_tokens=True)]
