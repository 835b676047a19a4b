"""Before the first step: config, data, model, method, caches, optimiser, schedule, resume state.

`prepare` returns the `Session` the loop in `loop.py` runs. Every user-facing failure here becomes an
`error` event with a message naming the setting or the files, and `TrainingAborted`.
"""
from __future__ import annotations

import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from engine.config import RunConfig, sample_prompts
from engine.rundir import RunDir
from engine.train import checkpoint as ckpt
from engine.train import data as datamod
from engine.train.events import EventWriter, Progress
from engine.train.interrupt import interrupting, raise_if_stop_requested
from engine.train.loop import Position, Session, TrainingAborted

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_mixed_precision(value: str, cuda: bool | None = None) -> str:
    """`train.mixed_precision = "auto"` made concrete for this machine: bf16 on a GPU that has it, fp16 on
    an older GPU, no on a CPU (bf16 autocast there is slower, and fp16 unsupported). Other values pass."""
    if value != "auto":
        return value
    if cuda is None:
        cuda = torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "").lower() not in ("1", "true")
    if not cuda:
        return "no"
    return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
SCHEDULES = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}


def quiet_libraries() -> None:
    """No tqdm bars or chatty warnings in train.log."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    # peft, on saving a text-encoder LoRA of a local base: harmless (new tokens are exported as embeddings).
    warnings.filterwarnings("ignore", message=r"Could not find a config file in .* will assume that the "
                                              r"vocabulary was not modified")
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    dlog.set_verbosity_error()
    dlog.disable_progress_bar()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()


def prepare(run: RunDir, cfg: RunConfig, accelerator: Any, events: EventWriter, *, resume: bool) -> Session:
    from accelerate.utils import set_seed

    quiet_libraries()
    t = cfg.train
    make_optimizer_class(cfg, events)  # fail before loading anything if bitsandbytes is missing
    if t.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        # accelerate runs no fp16 autocast on a CPU, so the fp16 frozen weights would meet fp32 inputs.
        events.error("train.mixed_precision = \"fp16\" needs a GPU; this run is on the CPU. "
                     "Use train.mixed_precision = \"bf16\" (CPU autocast) or \"no\"")
        raise TrainingAborted()
    if accelerator.device.type == "cpu":
        warn_if_cpu_oversubscribed(events, accelerator.num_processes)
    resume_from = None
    if resume:
        resume_from = ckpt.resumable_checkpoint(run)
        if resume_from is None:
            events.error(f"cannot resume {run.path}: no complete checkpoint with state/ in checkpoints/ "
                         "(save.state = true keeps it)")
            raise TrainingAborted()
    if accelerator.is_main_process:
        ckpt.remove_partial_folders(run.checkpoints_dir)
    set_seed(t.seed)

    # --- data -------------------------------------------------------------------------------
    project_dir = run.project_dir
    examples = datamod.load_examples(project_dir, cfg)
    raise_if_stop_requested()
    if examples.skipped:
        events.warning(f"{len(examples.skipped)} unusable image(s) skipped: "
                       + ", ".join(f"{s['path']} ({s['reason']})" for s in examples.skipped[:10])
                       + (" …" if len(examples.skipped) > 10 else ""), items=examples.skipped)
    if not examples.train:
        events.error(f"no usable training images in {project_dir}"
                     + (f" ({len(examples.skipped)} skipped: " + ", ".join(s["path"] for s in examples.skipped)
                        + ")" if examples.skipped else "") + "; add images or check data.concepts",
                     items=examples.skipped)
        raise TrainingAborted()

    # --- model and method -------------------------------------------------------------------
    from engine.train.methods import make_method
    from engine.train.models import BaseModelError, load_components

    weight_dtype = DTYPES[t.mixed_precision]
    try:
        with interrupting():  # a stop request ends the load at once: nothing trained, nothing written yet
            components = load_components(cfg.model.base, project_dir, dtype=torch.float32,
                                         prediction_type=cfg.model.prediction_type, config=cfg.model.config or None,
                                         log=lambda msg: events.say(f"building the tiny model: {msg}"))
    except BaseModelError as e:
        events.error(str(e))  # the message names the key and the value
        raise TrainingAborted() from None
    try:
        raise_if_stop_requested()
        method = make_method(cfg, components, accelerator, weight_dtype)
        method.prepare_data(examples, project_dir=project_dir, events=events)
        method.setup()  # a ValueError here names the setting (lora.target_modules, …)
    except ValueError as e:
        events.error(str(e))
        raise TrainingAborted() from None
    if t.gradient_checkpointing:
        components.unet.enable_gradient_checkpointing()
        if method.trains_text_encoder:
            te = components.text_encoder  # transformers 5 renamed gradient_checkpointing_enable
            enable = getattr(te, "activation_checkpointing_enable", None) or te.gradient_checkpointing_enable
            enable()
    if t.ema and not hasattr(method, "ema"):
        events.warning(f"train.ema applies to full fine-tunes; method {cfg.method!r} trains without EMA")
    if cfg.data.num_workers:
        events.warning("data.num_workers is not used: with cached latents (the default) a batch is a slice "
                       "of tensors already on the device and nothing is decoded during training; uncached "
                       "runs decode in the training process")
    if accelerator.device.type == "cuda":
        # NHWC convolutions are what the tensor cores run natively (cuDNN otherwise transposes around
        # each conv); parameters keep their values, only the layout changes.
        components.unet.to(memory_format=torch.channels_last)
    compiled = t.compile and compile_unet(components.unet, accelerator, events)

    # --- caches -----------------------------------------------------------------------------
    device = accelerator.device
    data = datamod.TrainingData(examples.train, cfg, components.tokenizer, device)
    validation = build_caches(cfg, accelerator, events, method, components, data, examples.validation,
                              project_dir / ".cache", weight_dtype)
    method.examples_ready(data.examples, events=events)  # positions are final: undecodable images are gone
    over = datamod.overlong_captions(data.examples + examples.validation, components.tokenizer)
    if over:  # the trainer truncates (`datamod.tokenize`); say so once, with the real tokenizer's counts
        events.warning(datamod.truncation_warning(over, components.tokenizer), reason="captions_truncated",
                       items=[{"path": rel, "tokens": n} for rel, n in over[:50]], count=len(over))

    # --- optimiser and schedule -------------------------------------------------------------
    from diffusers.optimization import get_scheduler

    optimizer = make_optimizer(cfg, events, method.parameter_groups(), device)
    steps_per_epoch = datamod.steps_per_epoch(data.images_per_epoch, world=accelerator.num_processes,
                                              batch_size=t.batch_size, accumulation=t.gradient_accumulation)
    total_steps = steps_per_epoch * t.epochs
    if t.max_steps:
        total_steps = min(total_steps, t.max_steps)
    epochs = min(t.epochs, math.ceil(total_steps / steps_per_epoch))
    lr_scheduler = get_scheduler(SCHEDULES[t.scheduler], optimizer, num_warmup_steps=t.warmup_steps,
                                 num_training_steps=total_steps)

    position = Position()
    length_change: dict[str, Any] | None = None
    progress_state: dict[str, Any] = {}
    sampled: set[str] = set()
    from engine.project import load_project_file

    prompts = sample_prompts(cfg, load_project_file(project_dir).goals.as_dict())
    if resume_from is not None:
        # New sample prompts/seeds (`tunelab resume --set sample.…`), a column a signal left unrendered:
        # render the missing cells of every column whose weights are at hand, before this checkpoint's
        # state replaces the ones setup() left (the base column's).
        from engine.train.backfill import backfill_samples

        backfill_samples(run, cfg, method, components, accelerator, events, prompts, resume_from)
        state = ckpt.read_state(resume_from)
        progress_state = state.progress
        method.load_trainable_state(state.trainable)
        method.load_method_state(state.method, state.trainable)
        ckpt.optimizer_from_files(optimizer, state.optimizer_tensors, state.optimizer_meta)
        lr_scheduler.load_state_dict(state.scheduler)
        p = state.progress
        length_change = retarget_schedule(cfg, lr_scheduler, optimizer, p.get("total_steps"), total_steps)
        position = Position(step=p["step"], epoch=p["epoch"], in_epoch=p["in_epoch"],
                            epoch_complete=p["epoch_complete"])
        sampled = set(p.get("sampled", [])) | {resume_from.name}  # backfill_samples rendered its column
        if p.get("processes", accelerator.num_processes) != accelerator.num_processes:
            events.warning(f"resuming with {accelerator.num_processes} processes where the checkpoint had "
                           f"{p['processes']}: the data order differs from an uninterrupted run")
        if p.get("dataset") not in (None, datamod.fingerprint(data.examples)):
            events.warning(f"the training images or captions changed since checkpoint {resume_from.name} "
                           f"({p.get('images', '?')} images per epoch then, {data.images_per_epoch} now): "
                           "the run goes on with the current data, so its data order and step count differ "
                           "from an uninterrupted run's", images_then=p.get("images"),
                           images_now=data.images_per_epoch)

    # A module with nothing to train (textual inversion's UNet) gets mixed precision but no DDP wrapper:
    # DDP refuses a module without trainable parameters (accelerate skips it itself on GPUs, not on CPUs).
    modules = method.trained_modules()
    frozen = [not any(p.requires_grad for p in m.parameters()) for m in modules]
    trained = accelerator.prepare(*[m for m, f in zip(modules, frozen) if not f], optimizer)
    *prepared, optimizer = trained if isinstance(trained, (list, tuple)) else [trained]
    prepared_iter = iter(prepared)
    trained_modules = [accelerator.prepare_model(m, evaluation_mode=True) if f else next(prepared_iter)
                       for m, f in zip(modules, frozen)]
    unet_forward = trained_modules[0]
    text_encoder_forward = trained_modules[1] if method.trains_text_encoder else components.text_encoder

    if resume_from is not None:
        scaler_state = progress_state.get("grad_scaler")
        if scaler_state and getattr(accelerator, "scaler", None) is not None:
            accelerator.scaler.load_state_dict(scaler_state)
        if accelerator.is_main_process:
            ckpt.rng_from_files(state.rng_tensors, state.rng_meta)
        else:
            set_seed(t.seed + accelerator.process_index * 7919 + position.step, device_specific=False)

    progress = Progress(device, total_steps, smooth_loss=progress_state.get("smooth_loss"),
                        smooth_weight=progress_state.get("smooth_weight", 0.0),
                        elapsed=progress_state.get("elapsed", 0.0),
                        window_loss_sum=progress_state.get("window_loss_sum", 0.0),
                        window_loss_count=progress_state.get("window_loss_count", 0))
    session = Session(
        run=run, cfg=cfg, accelerator=accelerator, events=events, method=method, components=components, data=data,
        validation=validation, optimizer=optimizer, lr_scheduler=lr_scheduler, trained=trained_modules,
        unet_forward=unet_forward, text_encoder_forward=text_encoder_forward, weight_dtype=weight_dtype,
        steps_per_epoch=steps_per_epoch, total_steps=total_steps, epochs=epochs,
        prompts=prompts, position=position, progress=progress, resumed_from=resume_from,
        sampled=sampled, saved_at_step=position.step if resume_from is not None else -1,
        noise_gen=torch.Generator(device=device), aug_gen=torch.Generator(), compiled=bool(compiled),
    )
    common = dict(step=position.step, total_steps=total_steps, epoch=position.epoch, epochs=epochs,
                  steps_per_epoch=steps_per_epoch, images=data.images_per_epoch, method=cfg.method,
                  processes=accelerator.num_processes, device=str(accelerator.device),
                  mixed_precision=cfg.train.mixed_precision)
    if resume_from is not None:
        from engine.resume import changes_since_last_attempt, describe_changes

        changes = changes_since_last_attempt(run)
        extra: dict[str, Any] = {}
        if changes:
            extra["config_changes"] = [{"key": k, "before": a, "after": b} for k, a, b in changes]
            events.say(f"resumed with changes: {describe_changes(changes)}")
        if length_change:
            extra.update(length_change)
            events.say(length_change["lr_schedule"])
        events.emit("resumed", checkpoint=str(resume_from.relative_to(run.path)), **common, **extra)
    events.emit("start", resumed_from_step=position.step if resume_from is not None else None,
                validation_images=len(examples.validation), cache=data.cache_report, **common)
    events.say(f"{'resuming' if resume_from else 'training'} {cfg.method} on {data.images_per_epoch} images/epoch "
               f"({len(examples.train)} files), {steps_per_epoch} steps/epoch, {total_steps} steps, "
               f"{accelerator.num_processes} process(es), base {components.source}")
    return session


def retarget_schedule(cfg: RunConfig, lr_scheduler: Any, optimizer: Any, before: Any, total_steps: int) -> dict[str, Any] | None:
    """A run resumed with another length (`tunelab resume --set train.epochs=…`): the LR schedule goes on as
    if the run had been planned with the new length from the start. `get_scheduler` was built for the new
    total and the checkpoint's state gave it the step; the optimiser's learning rates, though, are the old
    curve's at that step, so they are set to the new curve's. A constant schedule (after warmup) keeps its
    rate; cosine and linear move to the new curve (a finished cosine run's rate rises from ~0 again).
    Returns what the `resumed` event says about it, or None when the length did not change."""
    if not isinstance(before, int) or before == total_steps:
        return None
    step = lr_scheduler.last_epoch
    old = [g["lr"] for g in optimizer.param_groups]
    for g, base, fn in zip(optimizer.param_groups, lr_scheduler.base_lrs, lr_scheduler.lr_lambdas):
        g["lr"] = base * fn(step)
    lr_scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]  # what get_last_lr() reports
    name = cfg.train.scheduler
    how = ("unchanged (constant schedule)" if name == "constant" else
           f"recomputed: the {name} schedule now spans {total_steps} steps, so the learning rate at step {step} "
           f"goes from {old[0]:.3g} to {optimizer.param_groups[0]['lr']:.3g}")
    return {"total_steps_before": before, "lr_before": old[0], "lr_now": optimizer.param_groups[0]["lr"],
            "lr_schedule": f"training length changed from {before} to {total_steps} steps; learning rate {how}"}


def cpu_oversubscription(threads: int, processes: int, cores: int) -> str | None:
    """Why a CPU run's threads outnumber the cores, or None. torch runs `threads` intra-op threads in each of
    the machine's `processes`; more than one per core makes them wait on each other (measured on 2 cores:
    2 processes x 2 threads train 17x slower than x 1, docs/performance.md)."""
    if threads * processes <= cores:
        return None
    omp = os.environ.get("OMP_NUM_THREADS")
    return (f"{processes} training process(es) x {threads} torch thread(s) each "
            f"(OMP_NUM_THREADS={omp if omp is not None else 'unset'}) on {cores} CPU core(s) oversubscribe "
            f"the CPU, which trains many times slower; set OMP_NUM_THREADS={max(1, cores // processes)} "
            "(cores // processes) or unset it (accelerate launch then gives each process one thread)")


def warn_if_cpu_oversubscribed(events: EventWriter, num_processes: int) -> None:
    """A `warning` (reason `cpu_oversubscribed`) when this machine's training processes run more torch
    threads than it has cores: a user's OMP_NUM_THREADS set to the core count, with 2 processes."""
    processes = int(os.environ.get("LOCAL_WORLD_SIZE") or num_processes)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = torch.get_num_threads()
    message = cpu_oversubscription(threads, processes, cores)
    if message:
        events.warning(message, reason="cpu_oversubscribed", threads=threads, processes=processes, cores=cores)


def make_optimizer(cfg: RunConfig, events: EventWriter, groups: list[dict[str, Any]], device: torch.device) -> Any:
    """AdamW; on CUDA the fused kernel (one launch for all parameters instead of a few per tensor).
    Its state dict is the same as the plain one's, so checkpoints resume either way."""
    cls = make_optimizer_class(cfg, events)
    extra: dict[str, Any] = {}
    if cls is torch.optim.AdamW and device.type == "cuda":
        extra["fused"] = True
    return cls(groups, weight_decay=cfg.train.weight_decay, **extra)


def compile_unet(unet: Any, accelerator: Any, events: EventWriter) -> bool:
    """`train.compile`: compile the UNet's repeated transformer blocks (regional compilation: one
    graph reused by every block, so compiling takes a fraction of a whole-model compile). Compilation
    happens in the first step; the loop reports its time in a `compile` event."""
    if accelerator.device.type != "cuda":
        events.warning("train.compile needs a CUDA device; training without torch.compile")
        return False
    started = time.monotonic()
    if hasattr(unet, "compile_repeated_blocks"):
        unet.compile_repeated_blocks()
        how = "repeated blocks"
    else:  # older diffusers: the whole UNet
        unet.compile()
        how = "whole UNet"
    events.say(f"torch.compile of the UNet ({how}) armed in {time.monotonic() - started:.1f}s; "
               "the first step compiles")
    return True


def make_optimizer_class(cfg: RunConfig, events: EventWriter) -> Any:
    if cfg.train.optimizer == "adamw8bit":
        try:
            import bitsandbytes as bnb  # type: ignore[import-not-found]
        except ImportError:
            events.error("train.optimizer = \"adamw8bit\" needs bitsandbytes, which is not installed "
                         "(pip install bitsandbytes, on a CUDA machine); or set train.optimizer = \"adamw\"")
            raise TrainingAborted() from None
        return bnb.optim.AdamW8bit
    return torch.optim.AdamW


def build_caches(cfg: RunConfig, accelerator: Any, events: EventWriter, method: Any, components: Any,
                 data: datamod.TrainingData, validation_examples: list[datamod.Example], cache_root: Path,
                 weight_dtype: torch.dtype) -> dict[str, torch.Tensor] | None:
    """Fill `data`'s latent/text tables (main process computes and writes, the others read), and build
    the fixed validation set. Returns the validation tensors, or None without validation images."""
    from engine.train.cache import LatentCache, TextCache

    d = cfg.data
    device = accelerator.device
    cache_latents = d.cache_latents
    if cache_latents and d.crop == "random":
        cache_latents = False
        events.warning("data.crop = \"random\" needs a fresh crop every step, so latents are not cached "
                       "(data.cache_latents is ignored); each step encodes its images with the VAE")
    cache_text = d.cache_text and not method.trains_text_encoder
    started = time.monotonic()
    latent_cache = LatentCache(cache_root, components.vae, resolution=d.resolution, flip=d.flip, dtype=weight_dtype)
    text_cache = TextCache(cache_root, components.text_encoder, components.tokenizer, dtype=weight_dtype) \
        if cache_text else None
    computed = 0
    skipped: list[tuple[datamod.Example, str]] = []
    captions = [""] + sorted({e.caption for e in data.examples + validation_examples} - {""})
    row = {c: i for i, c in enumerate(captions)}
    # The main process fills the on-disk cache first; the others then read it.
    for turn in ("main", "others"):
        if (turn == "main") == accelerator.is_main_process:
            if cache_latents:
                table = latent_cache.load_all(data.examples, torch.device("cpu"))
                data.examples = [data.examples[i] for i in table.kept]
                data.latent_params = resident(table.params, device, events, "latents")
                computed += table.computed
                skipped += table.failed
            else:
                bad = datamod.undecodable(data.examples, d.resolution)
                data.examples = [e for e in data.examples if all(e is not b for b, _ in bad)]
                skipped += bad
            if text_cache is not None and data.examples:
                text_table, n = text_cache.load_all(captions, torch.device("cpu"))
                data.text_table = resident(text_table, device, events, "text embeddings")
                data.text_index = [row[e.caption] for e in data.examples]
                computed += n
        accelerator.wait_for_everyone()
    report_undecodable(events, skipped, remaining=len(data.examples), cache_root=cache_root)
    data.cache_report = {"latents": bool(cache_latents), "text": text_cache is not None, "computed": computed}
    if cache_latents or text_cache is not None:
        events.say(f"cache ready in {time.monotonic() - started:.1f}s ({computed} entries computed, "
                   f"the rest reused from {cache_root})")
    if not validation_examples:
        return None
    # Validation: posterior means (no sampling), noise and timesteps fixed per image by the seed.
    val_cache = LatentCache(cache_root, components.vae, resolution=d.resolution, flip=False, dtype=weight_dtype)
    table = val_cache.load_all(validation_examples, device, write=cache_latents and accelerator.is_main_process)
    if table.failed:
        events.warning(f"{len(table.failed)} validation image(s) could not be decoded and are left out: "
                       + ", ".join(f"{e.rel} ({why})" for e, why in table.failed[:10]),
                       items=[{"path": e.rel, "reason": why} for e, why in table.failed])
    if table.params is None:
        return None
    validation_examples = [validation_examples[i] for i in table.kept]
    vae = components.vae
    latents = datamod.sample_latents(table.params[:, 0], None, vae.config.scaling_factor,
                                     getattr(vae.config, "shift_factor", None))
    gen = torch.Generator().manual_seed(cfg.train.seed + 1_234_567)
    noise = torch.randn(latents.shape, generator=gen).to(device)
    timesteps = torch.randint(0, components.noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                              generator=gen).to(device)
    out = {"latents": latents, "noise": noise, "timesteps": timesteps}
    if text_cache is not None and data.text_table is not None:
        out["text"] = torch.stack([data.text_table[row[e.caption]] for e in validation_examples]).to(device)
    else:
        out["input_ids"] = datamod.tokenize(components.tokenizer, [e.caption for e in validation_examples]).to(device)
    return out


def resident(table: torch.Tensor | None, device: torch.device, events: EventWriter, what: str) -> torch.Tensor | None:
    """The cached table on the training device when it takes at most a fifth of the free memory
    there; otherwise in pinned host memory, each batch copied over without a sync."""
    if table is None or device.type != "cuda":
        return None if table is None else table.to(device)
    free, _ = torch.cuda.mem_get_info(device)
    size = table.numel() * table.element_size()
    if size <= free / 5:
        return table.to(device)
    events.say(f"cached {what} ({size / 2**30:.1f} GiB) stay in host memory: more than a fifth of the "
               f"{free / 2**30:.1f} GiB free on {device}")
    return table.pin_memory()


def report_undecodable(events: EventWriter, skipped: list[tuple[datamod.Example, str]], *, remaining: int,
                       cache_root: Path) -> None:
    """A `warning` naming each training image whose pixels could not be decoded; an `error` and
    `TrainingAborted` when no training image is left."""
    items = [{"path": e.rel, "reason": why} for e, why in skipped]
    if skipped and remaining:
        events.warning(f"{len(skipped)} image(s) could not be decoded and are skipped: "
                       + ", ".join(f"{i['path']} ({i['reason']})" for i in items[:10])
                       + (" …" if len(items) > 10 else ""), items=items)
    if not remaining:
        events.error("no usable training images: "
                     + ", ".join(f"{i['path']} ({i['reason']})" for i in items[:10])
                     + (" …" if len(items) > 10 else "") + "; replace or remove them", items=items)
        raise TrainingAborted()
