"""Support for the method tests (no tests here): load the tiny base in diffusers, render one picture,
read a run's sample, build a method without a model."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from engine.config import SamplePrompt


def one_prompt(cfg: Any, text: str) -> Any:
    """One prompt, one seed, two DDIM steps: the cheapest sample column."""
    cfg.sample.prompts = [SamplePrompt(text=text)]
    cfg.sample.seeds = [1]
    return cfg


def base_pipeline() -> Any:
    from diffusers import StableDiffusionPipeline

    from engine.train.tiny import ensure_tiny

    pipe = StableDiffusionPipeline.from_pretrained(ensure_tiny(), safety_checker=None, requires_safety_checker=False,
                                                   local_files_only=True)
    return pipe


def render(pipe: Any, prompt: str, cfg: Any, seed: int = 1) -> np.ndarray:
    """What the trainer's sampler draws for (prompt, seed) with this run's sample settings."""
    import torch

    from engine.train.sampling import make_scheduler

    pipe.scheduler = make_scheduler(cfg.sample.scheduler, pipe.scheduler)
    pipe.set_progress_bar_config(disable=True)
    res = cfg.data.resolution
    image = pipe(prompt=[prompt], num_inference_steps=cfg.sample.steps, guidance_scale=cfg.sample.guidance,
                 width=res, height=res, generator=[torch.Generator().manual_seed(seed)]).images[0]
    return np.asarray(image, dtype=np.int16)


def sample_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def differs(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute pixel difference (0-255)."""
    return float(np.abs(a - b).mean())


def fake_components(tokenizer: Any = None) -> Any:
    return SimpleNamespace(unet=None, text_encoder=None, vae=None, tokenizer=tokenizer)


def fake_accelerator(processes: int = 1, index: int = 0) -> Any:
    return SimpleNamespace(num_processes=processes, process_index=index, device="cpu", is_main_process=index == 0)
