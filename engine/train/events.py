"""What the trainer tells the world: `events.jsonl` (rank 0 only) and one human line per log in train.log.

Event kinds written by the trainer (every event also has `t`, unix time):

| kind | fields |
|---|---|
| `start` | step, total_steps, epoch, epochs, steps_per_epoch, images, method, processes, resumed_from_step (null on a fresh run), validation_images, cache ({latents, text, computed}) |
| `resumed` | step, epoch, checkpoint (written before `start` on --resume); readers drop earlier `progress` events with a larger step |
| `progress` | step, total_steps, epoch (1-based, under way), epochs, loss (mean since the last progress), smooth_loss, lr, img_s, elapsed (s), eta_s |
| `compile` | step, seconds (the first step, compilation included; not counted in img_s), what (`unet`) — with `train.compile` |
| `val_loss` | epoch, step, loss, images |
| `epoch` | epoch, epochs, step, seconds, images |
| `checkpoint` | epoch, step, path, reason, files, seconds |
| `checkpoint_deleted` | path |
| `sample_started` | column (samples/ folder name), epoch, step, images, batch_size, steps, scheduler, width, height; backfill (true: new cells of an earlier column, rendered on resume) |
| `sample` | epoch, step, prompt (index), seed, path, goal (the prompt's kind: accuracy/flexibility/preservation/other) |
| `sample_done` | column, epoch, step, images (written), seconds (the whole column, pipeline set-up included), seconds_per_image; backfill |
| `prior` | done, total, generated, reused, class_prompt, cache (folder relative to the project): DreamBooth's class images, before `start` |
| `phase` | phase (`textual_inversion`, `lora`), step (steps done when it begins), message; pivotal tuning: until_step, embeddings_frozen |
| `warning` | message, and optional context fields (items, budget, …) |
| `error` | message, and optional context fields |
| `stopped` | step, epoch, reason (`request`, `signal`, `budget`); also before the first step of a session (then no checkpoint was written, and a SIGTERM while loading may leave it the only event) |
| `finished` | step, epoch, seconds |

Paths in events are relative to the run directory. Checkpoint and sample-column names (and their
`epoch` fields) count *completed* epochs, as `engine.rundir.checkpoint_name` expects; progress
events carry the epoch under way.
"""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from engine.rundir import append_event


class EventWriter:
    """Appends events on the main process; a no-op on the others, so callers need no rank checks."""

    def __init__(self, events_path: Path, enabled: bool, rank: int = 0):
        self.path = Path(events_path)
        self.enabled = enabled
        self.rank = rank

    def emit(self, kind: str, /, **fields: Any) -> None:
        if self.enabled:
            append_event(self.path, kind, **fields)

    def say(self, line: str) -> None:
        """One human line for train.log (stdout; the supervisor redirects it)."""
        if self.enabled:
            print(line, flush=True)

    def warning(self, message: str, **fields: Any) -> None:
        self.emit("warning", message=message, **fields)
        self.say(f"warning: {message}")

    def error(self, message: str, **fields: Any) -> None:
        """An `error` event (main process) and a line on stderr from every process: an out-of-memory
        on another rank is otherwise only a dead worker in train.log."""
        self.emit("error", message=message, **fields)
        prefix = "" if self.enabled else f"[process {self.rank}] "
        print(f"{prefix}error: {message}", file=sys.stderr, flush=True)


class Progress:
    """Loss, throughput and ETA bookkeeping without a host sync per step.

    The loss of each optimiser step is added to a device tensor; `.item()` happens only in `report()`,
    every `train.log_every` steps. The first step whose loss was not finite is also tracked on the
    device, so `first_bad_step()` (called at log time and before every save) costs one sync.
    """

    SMOOTHING = 0.9  # weight of the past in the smoothed loss (an EMA with bias correction)

    def __init__(self, device: torch.device, total_steps: int, *, smooth_loss: float | None = None,
                 smooth_weight: float = 0.0, elapsed: float = 0.0, window_loss_sum: float = 0.0,
                 window_loss_count: int = 0):
        self.device = device
        self.total_steps = total_steps
        # A resumed run continues the loss window its checkpoint was saved in, so its next `progress`
        # averages the same steps an uninterrupted run's would.
        self.loss_sum = torch.full((), float(window_loss_sum), device=device, dtype=torch.float64)
        self.loss_count = int(window_loss_count)
        self.bad_step = torch.full((), -1, device=device, dtype=torch.long)
        self.smooth_loss = smooth_loss  # the biased EMA value
        self.smooth_weight = smooth_weight  # 1 - SMOOTHING**n, for bias correction
        self.elapsed_before = elapsed  # training seconds of earlier sessions (resume)
        self.started = time.monotonic()
        self.paused = 0.0  # seconds spent sampling/saving/validating in this session
        self.window_start = time.monotonic()
        self.window_paused = 0.0
        self.window_images = 0

    # --- per step (no host sync) ---------------------------------------------------------
    def add(self, loss: torch.Tensor, step: int, images: int) -> None:
        loss = loss.detach().to(torch.float64)
        self.loss_sum += torch.nan_to_num(loss, nan=0.0, posinf=0.0, neginf=0.0)
        self.loss_count += 1
        bad = ~torch.isfinite(loss) & (self.bad_step < 0)
        self.bad_step = torch.where(bad, torch.full_like(self.bad_step, step), self.bad_step)
        self.window_images += images

    def first_bad_step(self) -> int | None:
        value = int(self.bad_step.item())
        return value if value >= 0 else None

    def pause(self, seconds: float) -> None:
        """Time spent on something that is not training (samples, saves, validation)."""
        self.paused += seconds
        self.window_paused += seconds

    # --- at log time -----------------------------------------------------------------------
    @property
    def elapsed(self) -> float:
        """Seconds of training so far, all sessions, including saves and samples."""
        return self.elapsed_before + time.monotonic() - self.started

    def report(self, step: int, mean_loss: float | None = None, *, close: bool = True) -> dict[str, Any]:
        """Close the current window: mean loss over it, smoothed loss, images/s, ETA. With `close=False`
        (a stop between two regular reports) the same figures, with the window and smoothed loss left
        as they are, so the loss curve does not depend on where a run was stopped and resumed."""
        if mean_loss is None:
            mean_loss = float(self.loss_sum.item()) / max(self.loss_count, 1)
        smooth_before = (self.smooth_loss, self.smooth_weight)
        if math.isfinite(mean_loss):
            prev = self.smooth_loss if self.smooth_loss is not None else 0.0
            self.smooth_loss = self.SMOOTHING * prev + (1 - self.SMOOTHING) * mean_loss
            self.smooth_weight = 1 - self.SMOOTHING * (1 - self.smooth_weight)
        now = time.monotonic()
        train_seconds = max(now - self.window_start - self.window_paused, 1e-9)
        img_per_s = self.window_images / train_seconds
        steps_in_window = max(self.loss_count, 1)
        eta = (self.total_steps - step) * train_seconds / steps_in_window
        out = dict(
            loss=round(mean_loss, 6),
            smooth_loss=round(self.smoothed(), 6),
            img_s=round(img_per_s, 3),
            elapsed=round(self.elapsed, 1),
            eta_s=round(max(eta, 0.0), 1),
        )
        if not close:
            self.smooth_loss, self.smooth_weight = smooth_before
            return out
        self.loss_sum.zero_()
        self.loss_count = 0
        self.window_start = now
        self.window_paused = 0.0
        self.window_images = 0
        return out

    def window_loss(self) -> torch.Tensor:
        """The mean loss of the current window as a device tensor (to average across processes)."""
        return (self.loss_sum / max(self.loss_count, 1)).to(torch.float32)

    def smoothed(self) -> float:
        if self.smooth_loss is None or self.smooth_weight <= 0:
            return float("nan")
        return self.smooth_loss / self.smooth_weight

    def state(self) -> dict[str, Any]:
        return dict(smooth_loss=self.smooth_loss, smooth_weight=self.smooth_weight, elapsed=self.elapsed,
                    window_loss_sum=float(self.loss_sum.item()), window_loss_count=self.loss_count)


def progress_line(ev: dict[str, Any]) -> str:
    """`step 120/1000  epoch 3/10  loss 0.1234 (avg 0.1200)  lr 1.00e-04  3.2 img/s  eta 0:12:00`."""
    return (f"step {ev['step']}/{ev['total_steps']}  epoch {ev['epoch']}/{ev['epochs']}  "
            f"loss {ev['loss']:.4f} (avg {ev['smooth_loss']:.4f})  lr {ev['lr']:.2e}  "
            f"{ev['img_s']:.2f} img/s  elapsed {clock(ev['elapsed'])}  eta {clock(ev['eta_s'])}")


def clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
