"""The training loop: prepare, then for each step: batch → noise → UNet → loss → backward → step, and
maybe log, save, sample, stop.

`train(run_dir, resume=...)` is the whole trainer; `python -m engine.train RUN_DIR [--resume]` calls it
under `accelerate launch`. Everything it reads comes from the run directory (the frozen `config.toml`,
the project two levels up); everything it says goes to `events.jsonl` (main process only) and a human
line per log to stdout (train.log). See DESIGN.md for the contract and `events.py` for event kinds.

Gradient accumulation is explicit: a step's micro-batches run under `accelerator.no_sync` except the
last, and the loss is divided by the number of micro-batches *in that step*. (accelerate's `accumulate`
counts micro-batches across epoch ends, which a resumable, ragged-ended epoch cannot use exactly.)
All randomness in a step (flip, caption dropout, crop, VAE posterior sample, noise, timesteps) comes
from generators seeded by (seed, step, micro-batch, rank), so a resumed run draws what an uninterrupted
one would have; global RNG states (LoRA dropout) are restored from the checkpoint.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from engine.config import RunConfig, load_run_config
from engine.schema import ConfigError
from engine.rundir import RunDir, checkpoint_name
from engine.train.interrupt import StopBeforeTraining, StopRequestWatch
from engine.train import checkpoint as ckpt
from engine.train import data as datamod
from engine.train.events import EventWriter, Progress, progress_line

EXIT_OK = 0
EXIT_ERROR = 1


class TrainingAborted(Exception):
    """Training cannot go on; the message is already in an `error` event."""


def _raise_stop(*_: Any) -> None:
    raise StopBeforeTraining()


@dataclass
class Position:
    """Where training is: optimiser steps done, the current 1-based epoch, steps done in that epoch."""

    step: int = 0
    epoch: int = 1
    in_epoch: int = 0
    epoch_complete: bool = False  # the epoch-end work (validation, epoch event, saves) is done


@dataclass
class Session:
    """Everything the loop works with, built by `prepare`."""

    run: RunDir
    cfg: RunConfig
    accelerator: Any
    events: EventWriter
    method: Any
    components: Any
    data: datamod.TrainingData
    validation: dict[str, torch.Tensor] | None
    optimizer: Any
    lr_scheduler: Any
    trained: list[torch.nn.Module]  # prepared (possibly DDP-wrapped) trained modules; [0] is the UNet
    unet_forward: Any
    text_encoder_forward: Any
    weight_dtype: torch.dtype
    steps_per_epoch: int
    total_steps: int
    epochs: int
    prompts: list[Any]
    position: Position
    progress: Progress
    resumed_from: Path | None = None
    sampled: set[str] = field(default_factory=set)
    saved_at_step: int = -1
    signal_stop: bool = False
    noise_gen: torch.Generator | None = None
    aug_gen: torch.Generator | None = None
    compiled: bool = False  # train.compile: the first step of this session compiles


# ---------------------------------------------------------------------------------------------
# The loop


def train(run_dir: str | os.PathLike, *, resume: bool = False, stop_after_steps: int | None = None) -> int:
    """Train the run in `run_dir`; returns the exit code. `stop_after_steps` acts like a stop request
    after that many steps (tests and benchmarks)."""
    run = RunDir(run_dir)
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    try:
        cfg = load_run_config(run.config_path)
    except (ConfigError, OSError) as e:
        message = f"cannot read the run config {run.config_path}: {e}"
        if run.path.is_dir():
            EventWriter(run.events_path, True).error(message)
        else:
            print(f"error: {message}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    # A second run in the same process (tests, benchmarks) may use another mixed precision; the
    # process-wide PartialState (the process group) is kept.
    AcceleratorState._reset_state(reset_partial_state=False)
    cfg.train.mixed_precision = resolve_mixed_precision(cfg.train.mixed_precision)
    accelerator = Accelerator(mixed_precision=cfg.train.mixed_precision)
    events = EventWriter(run.events_path, accelerator.is_main_process, rank=accelerator.process_index)
    # SIGTERM: while preparing, stop at once (nothing to save); from the loop on, a graceful stop.
    previous_handler = signal.signal(signal.SIGTERM, _raise_stop) if _main_thread() else None
    watch = StopRequestWatch(run.control_dir)
    try:
        with watch:
            s = prepare(run, cfg, accelerator, events, resume=resume)
            if previous_handler is not None:
                signal.signal(signal.SIGTERM, lambda *_: setattr(s, "signal_stop", True))
        return loop(s, stop_after_steps=stop_after_steps)
    except StopBeforeTraining:
        requested = watch.fired
        if requested and accelerator.is_main_process:
            run.take_request("stop")
        stopped_before_training(run, events, resume=resume, reason="request" if requested else "signal")
        return EXIT_OK
    except TrainingAborted:
        return EXIT_ERROR
    except torch.OutOfMemoryError:
        events.error(out_of_memory_message(cfg), settings=oom_settings(cfg))
        return EXIT_ERROR
    except Exception as e:  # noqa: BLE001 - a bug or an unforeseen failure: an error event, not only a traceback
        import traceback

        traceback.print_exc()
        events.error(f"the trainer failed: {type(e).__name__}: {e} (the traceback is in train.log)")
        return EXIT_ERROR
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGTERM, previous_handler)
        accelerator.end_training() if hasattr(accelerator, "end_training") else None


def stopped_before_training(run: RunDir, events: EventWriter, *, resume: bool, reason: str,
                            at: tuple[int, int] | None = None) -> None:
    """A stop before this session's first step: no checkpoint (nothing new to save), a `stopped` event
    at `at` = (completed epochs, step), by default where the resumed checkpoint is (or 0)."""
    if at is None:
        latest = ckpt.resumable_checkpoint(run) if resume else None
        at = ckpt.checkpoint_epoch_step(latest) if latest is not None else (0, 0)
    events.emit("stopped", step=at[1], epoch=at[0], reason=reason)
    events.say(f"stopped before training ({reason}); no checkpoint was written")


def stopped_early(s: Session) -> bool:
    """Before the first step (after loading and caching, around the epoch-0 samples): a stop request
    or SIGTERM ends the run here, not after a step, a checkpoint and its samples."""
    flags = [0, 0]
    if s.accelerator.is_main_process and s.run.take_request("stop"):
        flags[0] = 1
    if s.signal_stop:
        flags[1] = 1
    if s.accelerator.num_processes > 1:
        from accelerate.utils import broadcast

        flags = broadcast(torch.tensor(flags, device=s.accelerator.device), from_process=0).tolist()
    if not (flags[0] or flags[1]):
        return False
    stopped_before_training(s.run, s.events, resume=s.resumed_from is not None,
                            reason="request" if flags[0] else "signal", at=(completed_epochs(s), s.position.step))
    return True


def loop(s: Session, *, stop_after_steps: int | None = None) -> int:
    cfg, acc, pos = s.cfg, s.accelerator, s.position
    accumulation = cfg.train.gradient_accumulation
    if stopped_early(s):
        return EXIT_OK
    if s.resumed_from is None and cfg.sample.at_start:
        sample(s, checkpoint_name(0, 0), epoch=0, step=0)
    # (a resume rendered its checkpoint's column, and new prompts' cells in earlier ones, in prepare:
    # engine/train/backfill.py)
    if stopped_early(s):
        return EXIT_OK
    while True:
        if pos.epoch_complete:
            if pos.in_epoch < s.steps_per_epoch and pos.step < s.total_steps:
                # An epoch that train.max_steps cut short, resumed with a later target: finish it first,
                # as a run planned with that target would have.
                pos.epoch_complete = False
            elif pos.epoch >= s.epochs or pos.step >= s.total_steps:
                break
            else:
                pos.epoch, pos.in_epoch, pos.epoch_complete = pos.epoch + 1, 0, False
        plan = datamod.epoch_plan(s.data.repeats, pos.epoch, cfg.train.seed, rank=acc.process_index,
                                  world=acc.num_processes, batch_size=cfg.train.batch_size)
        steps = [plan[i:i + accumulation] for i in range(0, len(plan), accumulation)]
        epoch_started = time.monotonic()
        while pos.in_epoch < len(steps) and pos.step < s.total_steps:
            if s.compiled:
                loss = first_compiled_step(s, steps[pos.in_epoch])
            else:
                loss = train_step(s, steps[pos.in_epoch])
            pos.step += 1
            pos.in_epoch += 1
            images = sum(len(m) for m in steps[pos.in_epoch - 1]) * acc.num_processes
            s.progress.add(loss, pos.step, images)

            stop, save_now, sample_now, reason = poll_requests(s, stop_after_steps)
            on_schedule = pos.step % cfg.train.log_every == 0 or pos.step == s.total_steps
            if on_schedule or stop:
                log_progress(s, close=on_schedule)
            if stop:
                # A signal usually comes with a deadline (a scheduler's SIGKILL follows): save and go;
                # the checkpoint's samples are rendered when the run is resumed.
                save(s, reason=reason, samples=reason != "signal")
                s.events.emit("stopped", step=pos.step, epoch=completed_epochs(s), reason=reason)
                s.events.say(f"stopped at step {pos.step} ({reason})")
                return EXIT_OK
            if save_now or (cfg.save.every_n_steps and pos.step % cfg.save.every_n_steps == 0):
                save(s, reason="request" if save_now else "steps")
            elif sample_now:
                sample(s, checkpoint_name(completed_epochs(s), pos.step), epoch=completed_epochs(s), step=pos.step)
        end_of_epoch(s, seconds=time.monotonic() - epoch_started)
    if cfg.save.last:
        save(s, reason="last")
    s.events.emit("finished", step=pos.step, epoch=completed_epochs(s), seconds=round(s.progress.elapsed, 1))
    s.events.say(f"finished: {pos.step} steps in {s.progress.elapsed:.0f}s")
    return EXIT_OK


def train_step(s: Session, micro_batches: list[list[int]]) -> torch.Tensor:
    """One optimiser step over its micro-batches; returns the step's mean loss (a device tensor)."""
    acc, cfg = s.accelerator, s.cfg
    total = torch.zeros((), device=acc.device)
    s.method.begin_step(s.position.step, total_steps=s.total_steps, events=s.events)
    for m, indices in enumerate(micro_batches):
        seed = datamod.step_seed(cfg.train.seed, s.position.step, m, acc.process_index)
        s.aug_gen.manual_seed(seed)
        s.noise_gen.manual_seed(seed)
        batch = s.data.micro_batch(s.method.batch_indices(indices, step=s.position.step, micro=m), s.aug_gen)
        with no_sync_unless(acc, s.trained, last=m == len(micro_batches) - 1):
            loss = compute_loss(s, batch)
            acc.backward(loss / len(micro_batches))
        total += loss.detach() / len(micro_batches)
    s.method.before_optimizer_step()
    if cfg.train.max_grad_norm > 0:
        acc.clip_grad_norm_(s.method.trainable_parameters(), cfg.train.max_grad_norm)
    s.optimizer.step()
    s.lr_scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    s.method.after_optimizer_step()
    return total


def first_compiled_step(s: Session, micro_batches: list[list[int]]) -> torch.Tensor:
    """The step that compiles (`train.compile`): timed with a sync, reported in a `compile` event,
    and kept out of the throughput figures."""
    started = time.monotonic()
    loss = train_step(s, micro_batches)
    loss.item()  # wait for it: compile time is the point of the event
    seconds = time.monotonic() - started
    s.compiled = False
    s.events.emit("compile", step=s.position.step + 1, seconds=round(seconds, 2), what="unet")
    s.events.say(f"torch.compile: first step took {seconds:.1f}s (compilation included)")
    s.progress.pause(seconds)
    return loss


def compute_loss(s: Session, batch: datamod.Batch) -> torch.Tensor:
    """Noise the latents at random timesteps and score the UNet's prediction against the target."""
    t, gen, scheduler = s.cfg.train, s.noise_gen, s.components.noise_scheduler
    latents = batch_latents(s, batch, gen)
    noise = torch.randn(latents.shape, generator=gen, device=latents.device)
    if t.noise_offset:
        noise = noise + t.noise_offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1), generator=gen,
                                                     device=latents.device)
    timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (latents.shape[0],), generator=gen,
                              device=latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    with torch.set_grad_enabled(s.method.trains_text_encoder):
        cond = batch_text(s, batch)
    pred = s.unet_forward(noisy, timesteps, cond, return_dict=False)[0]
    target = noise if s.components.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, timesteps)
    return s.method.loss(pred, target, snr_weights(s, timesteps), batch)


def batch_latents(s: Session, batch: datamod.Batch, gen: torch.Generator | None) -> torch.Tensor:
    vae = s.components.vae
    params = batch.latent_params
    if params is None:
        with torch.no_grad():
            params = vae.encode(batch.pixels.to(s.weight_dtype)).latent_dist.parameters
    return datamod.sample_latents(params, gen, vae.config.scaling_factor, getattr(vae.config, "shift_factor", None))


def batch_text(s: Session, batch: datamod.Batch) -> torch.Tensor:
    if batch.text_embeddings is not None:
        return batch.text_embeddings
    return s.text_encoder_forward(batch.input_ids, return_dict=False)[0]


def snr_weights(s: Session, timesteps: torch.Tensor) -> torch.Tensor | None:
    """Min-SNR-γ loss weights (Hang et al. 2023): min(SNR, γ)/SNR for ε, min(SNR, γ)/(SNR+1) for v."""
    gamma = s.cfg.train.min_snr_gamma
    if not gamma:
        return None
    from diffusers.training_utils import compute_snr

    snr = compute_snr(s.components.noise_scheduler, timesteps)
    clipped = torch.clamp(snr, max=gamma)
    return clipped / (snr + 1) if s.components.prediction_type == "v_prediction" else clipped / snr


@contextlib.contextmanager
def no_sync_unless(acc: Any, modules: list[torch.nn.Module], *, last: bool):
    """Skip the gradient all-reduce on every micro-batch but a step's last."""
    with contextlib.ExitStack() as stack:
        if not last and acc.num_processes > 1:
            for m in modules:
                stack.enter_context(acc.no_sync(m))
        yield


# ---------------------------------------------------------------------------------------------
# Requests, logging, epoch ends


def poll_requests(s: Session, stop_after_steps: int | None) -> tuple[bool, bool, bool, str]:
    """Control files, SIGTERM and the time budget, decided on the main process and shared."""
    flags = [0, 0, 0, 0]  # stop, save-now, sample-now, reason (0 request, 1 signal, 2 budget)
    if s.accelerator.is_main_process:
        if s.run.take_request("stop"):
            flags[0] = 1
        if s.run.take_request("save-now"):
            flags[1] = 1
        if s.run.take_request("sample-now"):
            flags[2] = 1
        if stop_after_steps is not None and s.position.step >= stop_after_steps:
            flags[0] = 1
        budget = s.cfg.budget.max_hours
        if not flags[0] and budget and s.progress.elapsed >= budget * 3600:
            flags[0], flags[3] = 1, 2
            s.events.warning(f"budget.max_hours = {budget:g} reached after {s.progress.elapsed / 3600:.2f} h; "
                             "stopping with a checkpoint", reason="budget", budget=budget)
    if s.signal_stop and not flags[0]:
        flags[0], flags[3] = 1, 1
    if s.accelerator.num_processes > 1:
        from accelerate.utils import broadcast

        flags = broadcast(torch.tensor(flags, device=s.accelerator.device), from_process=0).tolist()
    reason = ("request", "signal", "budget")[int(flags[3])]
    return bool(flags[0]), bool(flags[1]), bool(flags[2]), reason


def log_progress(s: Session, *, close: bool = True) -> None:
    """A `progress` event; `close=False` (a stop off the log schedule) keeps the loss window open, and
    the checkpoint saves it, so a resumed run's next event averages what an uninterrupted one would."""
    check_finite(s)
    mean_loss = s.progress.window_loss()
    if s.accelerator.num_processes > 1:
        mean_loss = s.accelerator.reduce(mean_loss, reduction="mean")
    pos = s.position
    report = s.progress.report(pos.step, float(mean_loss.item()), close=close)
    event = dict(step=pos.step, total_steps=s.total_steps, epoch=pos.epoch, epochs=s.epochs,
                 lr=s.lr_scheduler.get_last_lr()[0], **report)
    s.events.emit("progress", **event)
    s.events.say(progress_line(event))


def check_finite(s: Session) -> None:
    """Abort (error event, no save) when any process saw a non-finite loss since the last check."""
    step = s.progress.first_bad_step()
    if s.accelerator.num_processes > 1:  # every process must take the same decision
        seen = torch.tensor([float(step if step is not None else -1)], device=s.accelerator.device)
        worst = float(s.accelerator.reduce(seen, reduction="sum").item())
        step = None if worst == -s.accelerator.num_processes else (step or s.position.step)
    if step is None:
        return
    last = s.run.latest_complete_checkpoint()
    s.events.error(
        f"loss became NaN at step {step}; lower the learning rate (train.learning_rate = "
        f"{s.cfg.train.learning_rate:g})"
        + (", or use train.mixed_precision = \"bf16\" instead of fp16" if s.cfg.train.mixed_precision == "fp16" else "")
        + (f"; the last good checkpoint is {last.path.relative_to(s.run.path)}" if last else "; no checkpoint was saved"),
        step=step)
    raise TrainingAborted()


def end_of_epoch(s: Session, *, seconds: float) -> None:
    pos, cfg = s.position, s.cfg
    epoch_done = pos.in_epoch >= s.steps_per_epoch
    if s.validation is not None and epoch_done:
        validation_loss(s)
    if epoch_done:
        s.events.emit("epoch", epoch=pos.epoch, epochs=s.epochs, step=pos.step, seconds=round(seconds, 2),
                      images=s.data.images_per_epoch)
    pos.epoch_complete = True
    due = epoch_done and (pos.epoch in cfg.save.epochs
                          or (cfg.save.every_n_epochs and pos.epoch % cfg.save.every_n_epochs == 0))
    if due:
        save(s, reason="epoch")


@torch.no_grad()
def validation_loss(s: Session) -> None:
    """The same noise and timesteps for each held-out image every epoch, so epochs compare fairly."""
    started = time.monotonic()
    if s.accelerator.is_main_process:
        v = s.validation
        unet = s.accelerator.unwrap_model(s.trained[0])
        text_encoder = s.components.text_encoder
        was_training = unet.training, text_encoder.training
        unet.eval()
        text_encoder.eval()  # a trained text encoder's LoRA dropout must not make the score random
        scheduler = s.components.noise_scheduler
        losses = []
        bs = s.cfg.train.batch_size
        for i in range(0, v["latents"].shape[0], bs):
            latents, noise, t = v["latents"][i:i + bs], v["noise"][i:i + bs], v["timesteps"][i:i + bs]
            noisy = scheduler.add_noise(latents, noise, t)
            with s.accelerator.autocast():
                cond = v["text"][i:i + bs] if "text" in v else text_encoder(v["input_ids"][i:i + bs])[0]
                pred = unet(noisy, t, cond, return_dict=False)[0]
            target = noise if s.components.prediction_type == "epsilon" else scheduler.get_velocity(latents, noise, t)
            losses.append(torch.nn.functional.mse_loss(pred.float(), target.float(), reduction="none")
                          .mean(dim=(1, 2, 3)))
        unet.train(was_training[0])
        text_encoder.train(was_training[1])
        value = float(torch.cat(losses).mean().item())
        s.events.emit("val_loss", epoch=s.position.epoch, step=s.position.step, loss=round(value, 6),
                      images=int(v["latents"].shape[0]))
        s.events.say(f"validation loss {value:.4f} (epoch {s.position.epoch})")
    s.accelerator.wait_for_everyone()
    s.progress.pause(time.monotonic() - started)


# ---------------------------------------------------------------------------------------------
# Saving and sampling


def save(s: Session, *, reason: str, samples: bool = True) -> None:
    """A checkpoint at the current position (exports + state), then its samples (unless `samples` is
    False: a stop on a signal)."""
    pos, cfg, acc = s.position, s.cfg, s.accelerator
    if s.saved_at_step == pos.step:
        return  # already saved at this step (e.g. a stop right after an epoch-end save)
    check_finite(s)
    started = time.monotonic()
    epoch = completed_epochs(s)
    name = checkpoint_name(epoch, pos.step)
    failed = 0
    if acc.is_main_process:
        try:
            path, files = ckpt.write_checkpoint_folder(s.run.checkpoints_dir, name, lambda tmp: fill_checkpoint(s, tmp, name))
        except ckpt.CheckpointWriteError as e:
            s.events.error(str(e), path=str(e.path))
            failed = 1
        else:
            s.events.emit("checkpoint", epoch=epoch, step=pos.step, path=str(path.relative_to(s.run.path)),
                          reason=reason, files=files, seconds=round(time.monotonic() - started, 2))
            s.events.say(f"saved checkpoint {name} ({reason})")
            for gone in ckpt.prune(s.run, cfg.save.keep_last, list(cfg.save.epochs)):
                s.events.emit("checkpoint_deleted", path=str(gone.relative_to(s.run.path)))
    if acc.num_processes > 1:
        from accelerate.utils import broadcast

        failed = int(broadcast(torch.tensor([failed], device=acc.device), from_process=0).item())
    acc.wait_for_everyone()
    s.progress.pause(time.monotonic() - started)
    if failed:
        raise TrainingAborted()
    s.saved_at_step = pos.step
    if samples:
        sample(s, name, epoch=epoch, step=pos.step)
    else:
        s.events.say(f"samples of {name} are left for the resume (stopped by a signal)")


def completed_epochs(s: Session) -> int:
    """Checkpoint and sample names count completed epochs (a mid-epoch save belongs to the last one)."""
    pos = s.position
    return pos.epoch if pos.in_epoch >= s.steps_per_epoch else pos.epoch - 1


def fill_checkpoint(s: Session, folder: Path, name: str) -> list[str]:
    from engine.train.export import tunelab_version
    from engine.train.methods import ExportInfo

    cfg, pos = s.cfg, s.position
    info = ExportInfo(
        run_id=s.run.run_id, checkpoint=name, epoch=completed_epochs(s), step=pos.step, base_model=cfg.model.base,
        base_source=s.components.source, resolution=cfg.data.resolution, images=s.data.images_per_epoch,
        seed=cfg.train.seed, learning_rate=cfg.train.learning_rate, formats=list(cfg.save.formats),
        tunelab_version=tunelab_version(), config_dir=s.components.config_dir,
    )
    with s.method.inference_weights():
        files = s.method.export(folder, info)
    if cfg.save.state:
        files += ckpt.write_state(folder, progress=progress_state(s), trainable=s.method.trainable_state(),
                                  method_state=s.method.method_state(), optimizer=s.optimizer,
                                  scheduler=s.lr_scheduler)
    return files


def progress_state(s: Session) -> dict[str, Any]:
    pos = s.position
    state: dict[str, Any] = dict(step=pos.step, epoch=pos.epoch, in_epoch=pos.in_epoch,
                                 epoch_complete=pos.epoch_complete, total_steps=s.total_steps,
                                 seed=s.cfg.train.seed, processes=s.accelerator.num_processes,
                                 dataset=datamod.fingerprint(s.data.examples), images=s.data.images_per_epoch,
                                 sampled=sorted(s.sampled), **s.progress.state())
    scaler = getattr(s.accelerator, "scaler", None)
    if scaler is not None:
        state["grad_scaler"] = {k: (v.item() if hasattr(v, "item") else v) for k, v in scaler.state_dict().items()}
    return state


def sample(s: Session, name: str, *, epoch: int, step: int) -> None:
    """Render the sample column `name` on the main process; an OOM here is a warning, not fatal."""
    if not s.prompts or name in s.sampled:
        return
    from engine.train.sampling import render_samples

    started = time.monotonic()
    if s.accelerator.is_main_process:
        unet = s.accelerator.unwrap_model(s.trained[0])
        text_encoder = s.accelerator.unwrap_model(s.text_encoder_forward) if s.method.trains_text_encoder \
            else s.components.text_encoder
        try:
            with s.method.inference_weights():
                n = render_samples(run_path=s.run.path, folder_name=name, epoch=epoch, step=step, prompts=s.prompts,
                                   cfg=s.cfg, components=s.components, unet=unet, text_encoder=text_encoder,
                                   accelerator=s.accelerator, events=s.events)
            s.events.say(f"sampled {n} images into samples/{name} in {time.monotonic() - started:.1f}s")
        except torch.OutOfMemoryError:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            s.events.warning(f"out of memory while sampling {name}; training goes on. Lower sample.batch_size "
                             f"(= {s.cfg.sample.batch_size}) or sample.width/height.", checkpoint=name)
        except OSError as e:  # a full disk: the samples are lost, the run is not (a save then says so)
            where = e.filename or s.run.samples_dir / name
            s.events.warning(f"could not write the samples of {name} ({where}: {e.strerror or e}); "
                             "training goes on", checkpoint=name, path=str(where))
    s.sampled.add(name)
    s.accelerator.wait_for_everyone()
    s.progress.pause(time.monotonic() - started)


# ---------------------------------------------------------------------------------------------
# Errors


def oom_settings(cfg: RunConfig) -> dict[str, Any]:
    return {"train.batch_size": cfg.train.batch_size, "data.resolution": cfg.data.resolution,
            "train.gradient_checkpointing": cfg.train.gradient_checkpointing,
            "train.mixed_precision": cfg.train.mixed_precision}


def out_of_memory_message(cfg: RunConfig) -> str:
    t = cfg.train
    tips = [f"lower train.batch_size (= {t.batch_size}; raise train.gradient_accumulation to keep the "
            "effective batch)", f"lower data.resolution (= {cfg.data.resolution})"]
    if not t.gradient_checkpointing:
        tips.append("set train.gradient_checkpointing = true")
    if t.mixed_precision == "no":
        tips.append("set train.mixed_precision = \"bf16\" (or \"fp16\")")
    return "out of GPU memory during training: " + "; ".join(tips)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


from engine.train.prepare import prepare, resolve_mixed_precision  # noqa: E402  (prepare builds a Session; kept in its own module)
