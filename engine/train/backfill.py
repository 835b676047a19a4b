"""Backfilling sample columns on resume, so the contact sheet compares the same prompts at every checkpoint.

`tunelab resume RUN --set sample.prompts=[…, "new prompt"]` (or `sample.seeds` with a new seed) adds cells
that the columns rendered before lack. On resume, before the checkpoint's state is loaded, the trainer
renders the missing cells (current prompts × their seeds) of:

- the base column (`e0000-s00000000`) when the run has one or `sample.at_start` is true (a run launched
  with no prompts has none yet; with `at_start = false` it gets none): with the weights as
  `Method.setup` leaves them, which are the ones a fresh run's base column was rendered with (LoRA's
  zero-initialised up matrices, textual inversion's initializer vectors, the base UNet of a full
  fine-tune);
- every checkpoint still on disk, COMPLETE and with `state/`, whether or not it has a column yet (a run
  launched with no prompts rendered none): its trained tensors (`state/trainable.safetensors`, EMA
  shadows included) are loaded into the method first. A mid-epoch save in the first epoch
  (`e0000-s00000005`) is such a checkpoint, not the base column;
- the resumed checkpoint's column, also when it is not there at all (a stop on a signal leaves it to
  the resume) or was cut short by a crash.

Only missing images are rendered; nothing existing is overwritten. A column keeps its `samples.json`
entries and gets the new prompts and seeds added, with a `backfilled` list of the cells rendered later
and their settings (`engine.train.sampling.merged_samples_json`). Columns that cannot be rendered again
— the checkpoint was pruned (`save.keep_last`), saved without state (`save.state = false`), or never
existed (a `sample-now` column between saves) — keep their holes, and one `warning` names them, with
the checkpoints saved without state that have no column. So does a
column whose `samples.json` gives one of the current prompt indices another text (the project's goals
changed under a run that samples them): that prompt is not rendered there.

The cost is one image per missing cell (plus reading each checkpoint's trained tensors: small for
LoRA/textual inversion, the UNet for a full fine-tune). It runs on the main process; the others wait.
The loaded tensors do not matter afterwards: the resume then loads its own checkpoint's state.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from engine.rundir import RunDir, checkpoint_name, parse_checkpoint_name, parse_sample_name
from engine.train import checkpoint as ckpt
from engine.train.interrupt import raise_if_stop_requested

BASE = (0, 0)  # (epoch, step) of the column sampled before training; e0000-s00000005 is a checkpoint


def present_cells(folder: Path) -> set[tuple[int, int]]:
    try:
        names = [e.name for e in os.scandir(folder)]
    except OSError:
        return set()
    return {parsed for parsed in map(parse_sample_name, names) if parsed}


def missing_cells(folder: Path, prompts: list[Any]) -> tuple[set[tuple[int, int]], list[int]]:
    """(prompt index, seed) cells of `prompts` the column lacks, and the prompt indices left out because
    the column's samples.json names another text at that index."""
    from engine.contact_sheet import read_samples_json

    present = present_cells(folder)
    recorded = {}
    for n, r in enumerate(read_samples_json(folder).get("prompts") or []):
        if isinstance(r, dict) and isinstance(r.get("text"), str):
            recorded[r.get("index", n)] = r["text"]
    conflicts = [i for i, p in enumerate(prompts) if i in recorded and recorded[i] != p.text]
    missing = {(i, seed) for i, p in enumerate(prompts) if i not in conflicts for seed in p.seeds} - present
    return missing, conflicts


def backfill_samples(run: RunDir, cfg: Any, method: Any, components: Any, accelerator: Any, events: Any,
                     prompts: list[Any], resume_from: Path) -> None:
    """Render the missing cells of every column that can be rendered again (see the module docstring).
    Call after `method.setup()` and before the resume loads `resume_from`'s state."""
    if prompts and accelerator.is_main_process:
        _backfill(run, cfg, method, components, accelerator, events, prompts, resume_from)
    accelerator.wait_for_everyone()


def _backfill(run: RunDir, cfg: Any, method: Any, components: Any, accelerator: Any, events: Any,
              prompts: list[Any], resume_from: Path) -> None:
    columns = {name: (epoch, step) for name, epoch, step in run.sample_columns()}
    # The columns the run would have had, had it sampled these prompts from its start: every checkpoint's
    # (a run launched with no prompts has no column yet) and, with sample.at_start, the base column.
    for ck in run.checkpoints(complete_only=True):
        columns.setdefault(ck.path.name, (ck.epoch, ck.step))
    if cfg.sample.at_start:
        columns.setdefault(checkpoint_name(*BASE), BASE)
    parsed = parse_checkpoint_name(resume_from.name)
    if parsed is not None:
        columns.setdefault(resume_from.name, parsed)
    # The base column first: its weights are the ones loaded now, before any checkpoint's.
    order = sorted(columns, key=lambda n: (columns[n] != BASE, columns[n][1], columns[n][0]))
    lost: list[str] = []
    conflicted: dict[str, list[int]] = {}
    for name in order:
        epoch, step = columns[name]
        missing, conflicts = missing_cells(run.samples_dir / name, prompts)
        if conflicts:
            conflicted[name] = conflicts
        if not missing:
            continue
        raise_if_stop_requested()
        if (epoch, step) != BASE:
            trainable = run.checkpoints_dir / name / ckpt.STATE_DIR / "trainable.safetensors"
            if not ((run.checkpoints_dir / name / "COMPLETE").is_file() and trainable.is_file()):
                lost.append(name)
                continue
            try:
                method.load_trainable_state(ckpt.load_file(str(trainable)))
            except (ValueError, OSError, KeyError) as e:  # a checkpoint of another config: say so, go on
                events.warning(f"could not load checkpoint {name} to render its new sample cells ({e}); "
                               "its column keeps its holes", checkpoint=name)
                continue
        render(run, cfg, method, components, accelerator, events, prompts, name, epoch, step, missing)
    if lost:
        events.warning(f"{len(lost)} sample column(s) lack cells of the current sample prompts/seeds and cannot "
                       f"be rendered again: their checkpoints are gone or were saved without state/ "
                       f"(save.state = false): {', '.join(lost)}", reason="backfill_unavailable", columns=lost)
    if conflicted:
        events.warning("sample prompt(s) whose text differs from what earlier columns rendered at the same "
                       "index (were the project's goals edited?), not rendered there: "
                       + "; ".join(f"{n}: prompt {', '.join(map(str, c))}" for n, c in conflicted.items()),
                       reason="backfill_conflict")


def render(run: RunDir, cfg: Any, method: Any, components: Any, accelerator: Any, events: Any,
           prompts: list[Any], name: str, epoch: int, step: int, missing: set[tuple[int, int]]) -> None:
    """The missing cells of one column, with the weights the method holds now. An OOM or a full disk is a
    warning: the resume goes on."""
    import time

    from engine.train.sampling import render_samples

    started = time.monotonic()
    try:
        with method.inference_weights():
            n = render_samples(run_path=run.path, folder_name=name, epoch=epoch, step=step, prompts=prompts,
                               cfg=cfg, components=components, unet=components.unet,
                               text_encoder=components.text_encoder, accelerator=accelerator, events=events,
                               only=missing)
        events.say(f"sampled {n} new cell(s) into samples/{name} in {time.monotonic() - started:.1f}s")
    except torch.OutOfMemoryError:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        events.warning(f"out of memory while sampling the new cells of {name}; the resume goes on. Lower "
                       f"sample.batch_size (= {cfg.sample.batch_size}) or sample.width/height.", checkpoint=name)
    except OSError as e:
        where = e.filename or run.samples_dir / name
        events.warning(f"could not write the new samples of {name} ({where}: {e.strerror or e}); the resume "
                       "goes on", checkpoint=name, path=str(where))
