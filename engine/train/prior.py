"""DreamBooth's class images: generated once with the base model, cached, and reused by later runs.

Prior preservation trains on pictures the base model draws for the class prompt (`a dog`) next to the
instance pictures (`a sks dog`), so the fine-tune keeps what the class looks like. They live under the
project's `.cache/prior/<key>/`, where the key hashes everything that decides the pictures: the base
model's identity (a fingerprint of its UNet, text encoder, VAE and tokenizer), the class prompt, the
resolution and the class-image sampler settings (`dreambooth.class_steps` and `class_guidance`, with
DPM++ and no negative prompt). The contact sheet's `[sample]` settings play no part, so a later run with
the same base, class prompt and resolution reuses the pictures whatever it samples. Image `i` is drawn
with its own generator seeded by `i`, so a run asking for more images than are cached only draws the
missing ones, and a run asking for fewer takes the first ones. Each image is a PNG written atomically
(`00000.png`, …) beside a `prior.json` saying what they are; deleting the folder is always safe.

Only the main process draws; the others wait and then read the same files. Progress goes to
`events.jsonl` as `prior` events: `done`, `total`, `generated`, `reused`, `class_prompt`, and `cache`
(the folder, relative to the project). The first comes before any drawing (done = reused).
"""
from __future__ import annotations

import gc
import hashlib
import io
import json
import time
from pathlib import Path
from typing import Any

import torch

from engine import atomic
from engine.train.interrupt import raise_if_stop_requested

PRIOR_VERSION = "2"  # 2: drawn with the dreambooth.class_* settings, not [sample]
SCHEDULER = "dpm++"
SEED_BASE = 1_000_000  # image i is drawn with seed SEED_BASE + i


def base_identity(components: Any) -> str:
    from engine.train.cache import module_fingerprint

    vocab = hashlib.sha256(json.dumps(sorted(components.tokenizer.get_vocab().items())).encode()).hexdigest()[:16]
    return ":".join([module_fingerprint(components.unet), module_fingerprint(components.text_encoder),
                     module_fingerprint(components.vae), vocab, components.prediction_type])


def settings(cfg: Any) -> dict[str, Any]:
    """What decides the class pictures, besides the base model."""
    db = cfg.dreambooth
    return {"version": PRIOR_VERSION, "class_prompt": db.class_prompt, "resolution": cfg.data.resolution,
            "scheduler": SCHEDULER, "steps": db.class_steps, "guidance": db.class_guidance}


def cache_key(identity: str, spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({"base": identity, **spec}, sort_keys=True).encode()).hexdigest()[:24]


def image_path(folder: Path, index: int) -> Path:
    return folder / f"{index:05d}.png"


def class_images(cfg: Any, components: Any, *, cache_root: Path, accelerator: Any, events: Any) -> list[Path]:
    """The paths of `dreambooth.num_class_images` class images, drawing whatever the cache lacks.
    Call before the method's setup: the pictures must come from the base model."""
    count = cfg.dreambooth.num_class_images
    spec = settings(cfg)
    identity = base_identity(components)
    folder = Path(cache_root) / "prior" / cache_key(identity, spec)
    paths = [image_path(folder, i) for i in range(count)]
    shown = str(folder.relative_to(Path(cache_root).parent)) if folder.is_relative_to(Path(cache_root).parent) \
        else str(folder)  # events name it relative to the project
    if accelerator.is_main_process:
        missing = [i for i, p in enumerate(paths) if not p.is_file()]
        reused = count - len(missing)
        events.emit("prior", done=reused, total=count, generated=0, reused=reused, class_prompt=spec["class_prompt"],
                    cache=shown)
        if missing:
            events.say(f"drawing {len(missing)} class image(s) for {spec['class_prompt']!r} with the base model "
                       f"({reused} cached in {folder})")
            folder.mkdir(parents=True, exist_ok=True)
            atomic.write_json(folder / "prior.json", {**spec, "base": identity, "base_source": components.source,
                                                      "seed_base": SEED_BASE})
            _draw(cfg, components, folder, missing, accelerator, events, reused=reused, total=count, shown=shown)
        else:
            events.say(f"reusing {count} cached class image(s) for {spec['class_prompt']!r} from {folder}")
    accelerator.wait_for_everyone()
    return paths


def _draw(cfg: Any, components: Any, folder: Path, indices: list[int], accelerator: Any, events: Any, *,
          reused: int, total: int, shown: str) -> None:
    from diffusers import StableDiffusionPipeline

    from engine.train.sampling import make_scheduler

    spec, res, batch = settings(cfg), cfg.data.resolution, cfg.sample.batch_size
    device = accelerator.device
    for m in (components.unet, components.text_encoder, components.vae):
        m.to(device)
    pipe = StableDiffusionPipeline(
        vae=components.vae, text_encoder=components.text_encoder, tokenizer=components.tokenizer,
        unet=components.unet, scheduler=make_scheduler(spec["scheduler"], components.noise_scheduler),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    started, done = time.monotonic(), 0
    try:
        for start in range(0, len(indices), batch):
            raise_if_stop_requested()
            chunk = indices[start:start + batch]
            generators = [torch.Generator(device=device).manual_seed(SEED_BASE + i) for i in chunk]
            with torch.no_grad(), accelerator.autocast():
                images = pipe(prompt=[spec["class_prompt"]] * len(chunk), num_inference_steps=spec["steps"],
                              guidance_scale=spec["guidance"], width=res, height=res, generator=generators).images
            for i, image in zip(chunk, images):
                buf = io.BytesIO()
                image.save(buf, format="PNG")
                atomic.write_bytes(image_path(folder, i), buf.getvalue())
            done += len(chunk)
            events.emit("prior", done=reused + done, total=total, generated=done, reused=reused,
                        class_prompt=cfg.dreambooth.class_prompt, cache=shown)
    finally:
        del pipe
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    events.say(f"drew {done} class image(s) in {time.monotonic() - started:.1f}s")
