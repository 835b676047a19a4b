"""A stand-in for `engine.train` that follows the trainer's side of the run-directory contract, fast.

Run it in place of the real trainer with `TUNELAB_TRAINER_MODULE=tests.fake_trainer` (the supervisor
puts the source checkout on PYTHONPATH, so the module imports from any working directory), through real
`accelerate launch` or, with `TUNELAB_NO_ACCELERATE=1`, as plain `python -m tests.fake_trainer RUN_DIR
[--resume]`. It needs no torch. Under accelerate with several processes only rank 0 writes; the other
ranks wait for rank 0's `finished`/`stopped`/`error` event and exit with it.

What it does: reads `config.toml` (train.epochs, train.learning_rate, train.batch_size, sample.seeds),
samples epoch 0 (unless resuming), then for each step: polls `control/stop|save-now|sample-now`,
sleeps, prints a log line and writes a `progress` event; at the end of each epoch an `epoch` and a
`val_loss` event, and a checkpoint (files, `COMPLETE` last) + a sample column every SAVE_EVERY epochs
and at the end; then `finished`. On stop it saves a checkpoint, writes `stopped` and exits 0. With
`--resume` it continues from the newest COMPLETE checkpoint's step (the loss curve continues too: the
loss is a function of the global step).

Events written, a subset of the real trainer's (see `engine/train/events.py`): resumed (step, epoch,
checkpoint; before `start` on --resume), start (step, epoch, epochs, steps_per_epoch, total_steps,
processes, resumed_from_step), progress (step, epoch, epochs, total_steps, loss, smooth_loss, lr,
img_s, elapsed, eta_s), epoch (epoch, epochs, step, seconds, loss), val_loss (epoch, step, loss),
checkpoint (epoch, step, path), sample (one per image: epoch, step, prompt, seed, path, goal),
warning (message), error (message), stopped (epoch, step, reason, checkpoint), finished (epoch, step,
seconds). `epoch` in progress is the 1-based epoch under way; checkpoint/sample names use the number
of completed epochs (`rundir.checkpoint_name`). Paths in events are relative to the run dir.

Environment variables (all optional):
  TUNELAB_FAKE_EPOCHS           epochs (default: train.epochs from config.toml)
  TUNELAB_FAKE_STEPS_PER_EPOCH  optimiser steps per epoch (default 4)
  TUNELAB_FAKE_STEP_S           seconds per step (default 0.05)
  TUNELAB_FAKE_START_S          seconds of "model loading" before the first event (default 0)
  TUNELAB_FAKE_SAVE_S           seconds a checkpoint takes to write, before COMPLETE (default 0)
  TUNELAB_FAKE_SAVE_EVERY       save (and sample) every N epochs; the last epoch always saves (default 1)
  TUNELAB_FAKE_PROMPTS          sample prompts per column (default 2); seeds come from sample.seeds
  TUNELAB_FAKE_WARN             if set, written as a `warning` event at start
  TUNELAB_FAKE_CRASH_AT         at this global step: `error` event, traceback, exit 1
  TUNELAB_FAKE_HANG_AT          at this global step: hang (no polling, no events) until killed
  TUNELAB_FAKE_IGNORE_STOP=1    never read control/stop (only a forced stop ends it)
  TUNELAB_FAKE_IGNORE_SIGTERM=1 ignore SIGTERM (only SIGKILL ends it)
  TUNELAB_FAKE_HANG_AFTER_STOP=1 after a stop's checkpoint and `stopped` event, hang instead of exiting
                                (a trainer stuck in teardown)
  TUNELAB_FAKE_EXIT_CODE        exit with this code instead of writing `finished` at the end
"""
from __future__ import annotations

import json
import math
import os
import signal
import struct
import sys
import time
import tomllib
import zlib
from pathlib import Path

from engine import atomic
from engine.rundir import EventTail, RunDir, append_event, checkpoint_name, sample_name


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    return float(raw) if raw.strip() else default


def env_int(name: str, default: int | None) -> int | None:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


def loss_at(step: int) -> float:
    """A plausible, deterministic loss curve (so a resumed run continues the same curve)."""
    return round(0.05 + 0.4 * math.exp(-step / 25.0) + 0.02 * math.sin(step * 1.7), 5)


def tiny_png(rgb: tuple[int, int, int], size: int = 16) -> bytes:
    """A valid solid-colour PNG without PIL."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * size
    raw = zlib.compress(row * size)
    ihdr = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def empty_safetensors(metadata: dict[str, str]) -> bytes:
    header = json.dumps({"__metadata__": metadata}).encode("utf-8")
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header


class FakeTrainer:
    def __init__(self, run_dir: RunDir, resume: bool):
        self.run = run_dir
        self.resume = resume
        try:
            cfg = tomllib.loads(run_dir.config_path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError):
            cfg = {}
        train = cfg.get("train", {})
        self.epochs = env_int("TUNELAB_FAKE_EPOCHS", None) or int(train.get("epochs", 2))
        self.spe = env_int("TUNELAB_FAKE_STEPS_PER_EPOCH", 4) or 4
        self.total = self.epochs * self.spe
        self.step_s = env_float("TUNELAB_FAKE_STEP_S", 0.05)
        self.save_s = env_float("TUNELAB_FAKE_SAVE_S", 0.0)
        self.save_every = env_int("TUNELAB_FAKE_SAVE_EVERY", 1) or 1
        self.prompts = env_int("TUNELAB_FAKE_PROMPTS", 2) or 0
        self.seeds = list(cfg.get("sample", {}).get("seeds", [42])) or [42]
        self.lr = float(train.get("learning_rate", 1e-4))
        self.batch = int(train.get("batch_size", 1))
        self.crash_at = env_int("TUNELAB_FAKE_CRASH_AT", None)
        self.hang_at = env_int("TUNELAB_FAKE_HANG_AT", None)
        self.ignore_stop = os.environ.get("TUNELAB_FAKE_IGNORE_STOP") == "1"
        self.exit_code = env_int("TUNELAB_FAKE_EXIT_CODE", None)

    def event(self, kind: str, **fields) -> None:
        append_event(self.run.events_path, kind, **fields)

    def epoch_of(self, step: int) -> int:
        """The 1-based epoch that `step` (1-based) belongs to."""
        return (step - 1) // self.spe + 1

    def completed_epochs(self, step: int) -> int:
        return step // self.spe

    # --- files --------------------------------------------------------------------------------
    def save_checkpoint(self, step: int) -> str:
        epoch = self.completed_epochs(step)
        name = checkpoint_name(epoch, step)
        ck = self.run.checkpoints_dir / name
        (ck / "state").mkdir(parents=True, exist_ok=True)
        atomic.write_json(ck / "state" / "trainer_state.json", {"epoch": epoch, "step": step, "loss": loss_at(step)})
        atomic.write_bytes(ck / "pytorch_lora_weights.safetensors",
                           empty_safetensors({"format": "pt", "step": str(step)}))
        if self.save_s:
            time.sleep(self.save_s)
        atomic.write_text(ck / "COMPLETE", f"{time.time()}\n")
        rel = f"checkpoints/{name}"
        self.event("checkpoint", epoch=epoch, step=step, path=rel)
        print(f"saved {rel}", flush=True)
        return rel

    def sample(self, step: int) -> None:
        if not self.prompts:
            return
        epoch = self.completed_epochs(step)
        name = checkpoint_name(epoch, step)
        col = self.run.samples_dir / name
        col.mkdir(parents=True, exist_ok=True)
        goals = ("accuracy", "flexibility", "preservation", "other")
        for p in range(self.prompts):
            for seed in self.seeds:
                file = sample_name(p, seed)
                shade = (step * 37 + p * 80 + seed) % 256
                atomic.write_bytes(col / file, tiny_png((shade, (shade * 3) % 256, 255 - shade)))
                self.event("sample", epoch=epoch, step=step, prompt=p, seed=seed, path=f"samples/{name}/{file}",
                           goal=goals[p % len(goals)])

    # --- the loop -----------------------------------------------------------------------------
    def run_rank0(self) -> int:
        start_step = 0
        if self.resume:
            ck = self.run.latest_complete_checkpoint()
            if ck is None:
                self.event("error", message="--resume: no complete checkpoint to resume from")
                print("error: no complete checkpoint to resume from", file=sys.stderr, flush=True)
                return 1
            state = json.loads((ck.path / "state" / "trainer_state.json").read_text())
            start_step = int(state["step"])
            print(f"resuming from {ck.path.name} (step {start_step})", flush=True)
            self.event("resumed", step=start_step, epoch=self.completed_epochs(start_step),
                       checkpoint=f"checkpoints/{ck.path.name}")
        time.sleep(env_float("TUNELAB_FAKE_START_S", 0.0))
        self.event("start", step=start_step, epoch=self.completed_epochs(start_step), epochs=self.epochs,
                   steps_per_epoch=self.spe, total_steps=self.total, processes=int(os.environ.get("WORLD_SIZE", 1)),
                   resumed_from_step=start_step if self.resume else None)
        if os.environ.get("TUNELAB_FAKE_WARN"):
            self.event("warning", message=os.environ["TUNELAB_FAKE_WARN"])
        if not self.resume:
            self.sample(0)
        epoch_began = began = time.monotonic()
        step = start_step
        while step < self.total:
            if not self.ignore_stop and self.run.take_request("stop"):
                rel = self.save_checkpoint(step) if step > start_step or not self.resume else None
                if rel is None:
                    ck = self.run.latest_complete_checkpoint()
                    rel = f"checkpoints/{ck.path.name}" if ck else None
                self.event("stopped", epoch=self.completed_epochs(step), step=step, reason="request", checkpoint=rel)
                print(f"stopped at step {step}", flush=True)
                if os.environ.get("TUNELAB_FAKE_HANG_AFTER_STOP") == "1":
                    print("hanging after the stop", flush=True)
                    while True:
                        time.sleep(3600)
                return 0
            if self.run.take_request("save-now"):
                self.save_checkpoint(step)
            if self.run.take_request("sample-now"):
                self.sample(step)
            step += 1
            if self.hang_at is not None and step == self.hang_at:
                print(f"hanging at step {step}", flush=True)
                while True:
                    time.sleep(3600)
            if self.crash_at is not None and step == self.crash_at:
                self.event("error", message=f"fake crash at step {step}")
                raise RuntimeError(f"fake crash at step {step}")
            t0 = time.monotonic()
            time.sleep(self.step_s)
            dt = max(time.monotonic() - t0, 1e-6)
            loss = loss_at(step)
            print(f"step {step}/{self.total} loss {loss:.4f}", flush=True)
            self.event("progress", step=step, epoch=self.epoch_of(step), epochs=self.epochs,
                       total_steps=self.total, loss=loss, smooth_loss=loss, lr=self.lr,
                       img_s=round(self.batch / dt, 2), elapsed=round(time.monotonic() - began, 3),
                       eta_s=round((self.total - step) * dt, 2))
            if step % self.spe == 0:
                epoch = step // self.spe
                self.event("epoch", epoch=epoch, epochs=self.epochs, step=step,
                           seconds=round(time.monotonic() - epoch_began, 3), loss=loss)
                self.event("val_loss", epoch=epoch, step=step, loss=round(loss * 1.1, 5))
                epoch_began = time.monotonic()
                if epoch % self.save_every == 0 or step == self.total:
                    self.save_checkpoint(step)
                    self.sample(step)
        if self.exit_code is not None:
            return self.exit_code
        self.event("finished", epoch=self.epochs, step=step, seconds=round(time.monotonic() - began, 3))
        print("finished", flush=True)
        return 0

    def run_other_rank(self) -> int:
        """Ranks > 0 mirror rank 0: they end when it writes a terminal event."""
        tail = EventTail(self.run.events_path)
        try:
            tail.offset = self.run.events_path.stat().st_size
        except FileNotFoundError:
            pass
        while True:
            for ev in tail.read_new():
                if ev.get("kind") in ("finished", "stopped"):
                    return 0
                if ev.get("kind") == "error":
                    return 1
            time.sleep(0.05)


# ---------------------------------------------------------------------------------------------
# Helpers for tests that drive real runs with this trainer (used by the supervisor, CLI and TUI tests)

FAST_ENV = {"TUNELAB_TRAINER_MODULE": "tests.fake_trainer", "TUNELAB_NO_ACCELERATE": "1"}


def make_project(root: Path, config: str = "[train]\nepochs = 2\n", name: str = "p") -> Path:
    """A minimal project: `root/name/project.toml` and `configs/x.toml` holding `config` (on the tiny
    base unless `config` names one: the default base, SD 1.5, is not on this machine)."""
    project = Path(root) / name
    (project / "configs").mkdir(parents=True, exist_ok=True)
    (project / "project.toml").write_text(f'name = "{name}"\n')
    if "[model]" not in config:
        config += '\n[model]\nbase = "tiny"\n'  # at the end: the lines tests point at stay where they are
    (project / "configs" / "x.toml").write_text(config)
    return project


# Waits are on conditions; the timeout is only a backstop, generous because CI runs `-n 2` on 2 cores
# (a condition that holds returns at once, so only a failing test pays for it).
DEFAULT_WAIT_S = 60.0


def wait_for(predicate, timeout: float = DEFAULT_WAIT_S, interval: float = 0.05, what: str = "condition"):
    """Poll until `predicate()` is truthy; return its value, or raise AssertionError after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def wait_state(run_dir: RunDir, states, timeout: float = DEFAULT_WAIT_S) -> str:
    """Wait until the run's shown state is one of `states` (a string or a collection); return it."""
    wanted = {states} if isinstance(states, str) else set(states)
    last = []

    def check():
        last[:] = [run_dir.state()]
        return last[0] if last[0] in wanted else None

    try:
        return wait_for(check, timeout, what=f"state in {sorted(wanted)}")
    except AssertionError:
        log = run_dir.log_path.read_text(errors="replace")[-3000:] if run_dir.log_path.exists() else ""
        raise AssertionError(f"run state {last[0] if last else None!r} never became {sorted(wanted)} "
                             f"within {timeout:g} s; status={run_dir.read_status()}\ntrain.log tail:\n{log}")


def kill_run_processes(run_dir: RunDir) -> None:
    """Test teardown: SIGKILL whatever of this run is still alive (recorded pids, start times checked)."""
    from engine import launch

    status = run_dir.read_status() or {}
    procs = []
    for key in ("trainer", "supervisor"):
        pid, start = status.get(f"{key}_pid"), status.get(f"{key}_start")
        if launch.is_same_process(pid, start):
            procs += launch.process_tree(pid)
    launch.signal_procs(procs, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    resume = "--resume" in argv
    paths = [a for a in argv if not a.startswith("--")]
    run_dir = RunDir(paths[0] if paths else os.environ["TUNELAB_RUN_DIR"])
    if os.environ.get("TUNELAB_FAKE_IGNORE_SIGTERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    trainer = FakeTrainer(run_dir, resume)
    rank = int(os.environ.get("RANK", "0") or 0)
    print(f"fake trainer rank {rank} pid {os.getpid()} world {os.environ.get('WORLD_SIZE', '1')}", flush=True)
    if rank != 0:
        return trainer.run_other_rank()
    return trainer.run_rank0()


if __name__ == "__main__":
    sys.exit(main())
