"""Samples for the contact sheet: every prompt × every seed, at epoch 0 and at every save.

The pipeline is assembled from the modules being trained (unwrapped, in eval mode, EMA weights swapped
in by the method) — nothing is reloaded or copied — and put back into train mode afterwards. Each cell
has its own `torch.Generator` seeded with its seed, so a cell is the same picture whichever batch it
was rendered in. Images go to `samples/<checkpoint name>/pNN-sSEED.png` (atomic writes) with a
`samples.json` listing the prompts and settings, and a `sample` event per image, between one
`sample_started` and one `sample_done` event (with the column's seconds and seconds per image, so
`bench/sampling_share.py` can tell what share of a run's wall time went to sampling).

Cost: each image is `steps` UNet evaluations of a batch doubled by classifier-free guidance, plus a
VAE decode. DPM++ (2M, the default) at 20 steps is about what DDIM needs 50 for.
"""
from __future__ import annotations

import gc
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from engine import atomic
from engine.rundir import sample_name

SCHEDULERS = {
    "dpm++": "DPMSolverMultistepScheduler",
    "ddim": "DDIMScheduler",
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
}


@dataclass
class Cell:
    prompt_index: int
    seed: int
    prompt: Any  # engine.config.SamplePrompt


def cells(prompts: list[Any]) -> list[Cell]:
    return [Cell(i, seed, p) for i, p in enumerate(prompts) for seed in p.seeds]


def make_scheduler(name: str, noise_scheduler: Any) -> Any:
    import diffusers

    cls = getattr(diffusers, SCHEDULERS[name])
    extra = {"clip_sample": False, "set_alpha_to_one": False} if name == "ddim" else {}
    return cls.from_config(noise_scheduler.config, **extra)


def batches(all_cells: list[Cell], batch_size: int) -> list[list[Cell]]:
    """Cells that can share one pipeline call (same steps, guidance, negative prompt), in order."""
    out: list[list[Cell]] = []
    for c in all_cells:
        key = (c.prompt.steps, c.prompt.guidance, c.prompt.negative_prompt)
        if out and len(out[-1]) < batch_size and (out[-1][0].prompt.steps, out[-1][0].prompt.guidance,
                                                  out[-1][0].prompt.negative_prompt) == key:
            out[-1].append(c)
        else:
            out.append([c])
    return out


def prompt_record(i: int, p: Any) -> dict[str, Any]:
    return {"index": i, "text": p.text, "kind": p.kind, "seeds": list(p.seeds), "guidance": p.guidance,
            "steps": p.steps, "negative_prompt": p.negative_prompt}


def merged_samples_json(old: dict[str, Any], prompts: list[Any], only: set[tuple[int, int]],
                        settings: dict[str, Any]) -> dict[str, Any]:
    """A column's samples.json after a backfill (`engine.train.backfill`): every old entry kept, the new
    prompts added and the new seeds added to their prompts, and a `backfilled` list of the cells rendered
    later, with the settings they were rendered with (they may differ from the column's first ones)."""
    out = dict(old)
    records = [dict(r) for r in old.get("prompts") or [] if isinstance(r, dict)]
    by_index = {r.get("index", n): r for n, r in enumerate(records)}
    for i, p in enumerate(prompts):
        seeds = [seed for seed in p.seeds if (i, seed) in only]
        if not seeds:
            continue
        if i in by_index:
            r = by_index[i]
            r["seeds"] = list(r.get("seeds") or []) + [seed for seed in seeds if seed not in (r.get("seeds") or [])]
        else:
            r = prompt_record(i, p)
            r["seeds"] = seeds
            by_index[i] = r
            records.append(r)
    out["prompts"] = sorted(records, key=lambda r: r.get("index", 0) if isinstance(r.get("index"), int) else 0)
    out["backfilled"] = list(old.get("backfilled") or []) + [
        {"prompt": i, "seed": seed, "t": round(time.time(), 3), **settings,
         "guidance": prompts[i].guidance, "steps": prompts[i].steps,
         "negative_prompt": prompts[i].negative_prompt} for i, seed in sorted(only)]
    return out


def render_samples(*, run_path: Path, folder_name: str, epoch: int, step: int, prompts: list[Any], cfg: Any,
                   components: Any, unet: torch.nn.Module, text_encoder: torch.nn.Module, accelerator: Any,
                   events: Any, only: set[tuple[int, int]] | None = None) -> int:
    """Render every cell into `samples/<folder_name>/`; returns the number of images written.

    `only`: render just these (prompt index, seed) cells into an existing column and merge its
    samples.json (`merged_samples_json`) instead of writing a new one: a backfill."""
    from diffusers import StableDiffusionPipeline

    if not prompts:
        return 0
    s = cfg.sample
    width = s.width or cfg.data.resolution
    height = s.height or cfg.data.resolution
    out_dir = run_path / "samples" / folder_name
    out_dir.mkdir(parents=True, exist_ok=True)
    all_cells = cells(prompts)
    old = None
    if only is not None:
        all_cells = [c for c in all_cells if (c.prompt_index, c.seed) in only]
        if not all_cells:
            return 0
        from engine.contact_sheet import read_samples_json

        old = read_samples_json(out_dir) or None
    if old is not None:
        record = merged_samples_json(old, prompts, {(c.prompt_index, c.seed) for c in all_cells},
                                     {"width": width, "height": height, "scheduler": s.scheduler})
    else:
        record = {"epoch": epoch, "step": step, "width": width, "height": height, "scheduler": s.scheduler,
                  "prompts": [prompt_record(i, p) for i, p in enumerate(prompts)]}
    atomic.write_json(out_dir / "samples.json", record)
    started = time.monotonic()
    events.emit("sample_started", column=folder_name, epoch=epoch, step=step, images=len(all_cells),
                batch_size=s.batch_size, steps=s.steps, scheduler=s.scheduler, width=width, height=height,
                **({"backfill": True} if only is not None else {}))
    was_training = (unet.training, text_encoder.training)
    unet.eval()
    text_encoder.eval()
    pipe = StableDiffusionPipeline(
        vae=components.vae, text_encoder=text_encoder, tokenizer=components.tokenizer, unet=unet,
        scheduler=make_scheduler(s.scheduler, components.noise_scheduler), safety_checker=None,
        feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    written = 0
    try:
        for group in batches(all_cells, s.batch_size):
            p0 = group[0].prompt
            device = accelerator.device
            generators = [torch.Generator(device=device).manual_seed(c.seed) for c in group]
            with torch.no_grad(), accelerator.autocast():
                images = pipe(
                    prompt=[c.prompt.text for c in group],
                    negative_prompt=[p0.negative_prompt] * len(group) if p0.negative_prompt else None,
                    num_inference_steps=p0.steps, guidance_scale=p0.guidance, width=width, height=height,
                    generator=generators,
                ).images
            for c, image in zip(group, images):
                buf = io.BytesIO()
                image.save(buf, format="PNG")
                path = out_dir / sample_name(c.prompt_index, c.seed)
                atomic.write_bytes(path, buf.getvalue())
                events.emit("sample", epoch=epoch, step=step, prompt=c.prompt_index, seed=c.seed,
                            goal=c.prompt.kind, path=str(path.relative_to(run_path)))
                written += 1
    finally:
        del pipe
        unet.train(was_training[0])
        text_encoder.train(was_training[1])
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        seconds = time.monotonic() - started
        events.emit("sample_done", column=folder_name, epoch=epoch, step=step, images=written,
                    seconds=round(seconds, 3), seconds_per_image=round(seconds / written, 4) if written else None,
                    **({"backfill": True} if only is not None else {}))
    return written
