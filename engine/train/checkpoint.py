"""Checkpoint folders: written whole or not at all, and the `state/` that makes resume exact.

A checkpoint `checkpoints/e0005-s00001200/` is filled under `e0005-s00001200.tmp/`, gets `COMPLETE`
last, and is renamed into place; a crash or a full disk leaves earlier checkpoints as they were and no
half-written folder under a checkpoint name. Exports (the method's files) sit at the top of the folder;
`state/` holds everything resume needs, as safetensors and JSON only — nothing is pickled, so nothing
is unpickled on resume (accelerate's `load_state` unpickles RNG states and custom objects, which is why
this module exists):

    state/trainable.safetensors   the method's trainable weights (and EMA shadows), by name
    state/method.json             the method's own small state
    state/optimizer.safetensors   optimiser tensors as `state/<param index>/<name>`
    state/optimizer.json          param groups and non-tensor optimiser state
    state/scheduler.json          the LR scheduler's state_dict
    state/rng.safetensors         torch CPU (+ CUDA) and numpy generator states of the main process
    state/progress.json           step, epoch, position in the epoch's data order, smoothed loss,
                                  training seconds, python RNG state, grad-scaler state
"""
from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from engine import atomic
from engine.rundir import RunDir, parse_checkpoint_name

STATE_DIR = "state"


class CheckpointWriteError(Exception):
    """A checkpoint could not be written (disk full, permissions); the partial folder is gone."""

    def __init__(self, path: Path, cause: OSError):
        self.path = path
        self.cause = cause
        what = "the disk is full" if cause.errno == errno.ENOSPC else (cause.strerror or str(cause))
        super().__init__(f"could not write checkpoint {path}: {what}; earlier checkpoints are intact. "
                         "Free space (or lower save.keep_last / save.formats) and resume the run.")


# ---------------------------------------------------------------------------------------------
# Folders


def write_checkpoint_folder(checkpoints_dir: Path, name: str, fill: Callable[[Path], list[str]]) -> tuple[Path, list[str]]:
    """Create `checkpoints_dir/name` atomically: `fill(tmp_dir)` writes the files (returns their names),
    then `COMPLETE`, then the rename. An existing complete folder of that name is replaced."""
    final = checkpoints_dir / name
    tmp = checkpoints_dir / f"{name}.tmp"
    checkpoints_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        files = fill(tmp)
        atomic.write_text(tmp / "COMPLETE", json.dumps({"t": time.time(), "files": files}) + "\n")
        if final.exists():
            old = checkpoints_dir / f"{name}.old"
            shutil.rmtree(old, ignore_errors=True)
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        atomic.fsync_dir(checkpoints_dir)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(final, e) from e
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        io_error = _os_error_in(e)
        if io_error is None:
            raise
        raise CheckpointWriteError(final, io_error) from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, files


def _os_error_in(e: Exception) -> OSError | None:
    """safetensors reports a failed write as `SafetensorError: … I/O error: No space left on device (os error
    28)`, not as OSError; recover the OSError so a full disk is reported like any other write failure."""
    m = re.search(r"\(os error (\d+)\)", str(e))
    return OSError(int(m.group(1)), os.strerror(int(m.group(1)))) if m else None


def remove_partial_folders(checkpoints_dir: Path) -> None:
    """Leftovers of a crash during a save (`*.tmp`, `*.old`) are never valid checkpoints."""
    if not checkpoints_dir.is_dir():
        return
    for entry in checkpoints_dir.iterdir():
        if entry.is_dir() and entry.suffix in (".tmp", ".old"):
            shutil.rmtree(entry, ignore_errors=True)


def prune(run: RunDir, keep_last: int, protected_epochs: list[int]) -> list[Path]:
    """Delete the oldest complete checkpoints beyond `keep_last`, never one whose epoch is listed in
    `save.epochs` and never the newest (resume needs it). Returns the deleted paths."""
    if keep_last <= 0:
        return []
    candidates = [c for c in run.checkpoints(complete_only=True) if c.epoch not in protected_epochs]
    doomed = candidates[:-keep_last] if len(candidates) > keep_last else []
    newest = run.latest_complete_checkpoint()
    deleted = []
    for ck in doomed:
        if newest is not None and ck.path == newest.path:
            continue
        shutil.rmtree(ck.path, ignore_errors=True)
        deleted.append(ck.path)
    return deleted


def write_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """safetensors file, fsynced (it lives in a temporary folder that is renamed as a whole)."""
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(clean, str(path), metadata=metadata)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, obj: Any) -> None:
    atomic.write_json(path, obj)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------
# Optimiser, scheduler, RNG: state dicts as safetensors + JSON


def optimizer_to_files(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in sd["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{index}/{name}"] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_files(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, index, name = key.split("/", 2)
        state.setdefault(int(index), {})[name] = value
    for index, entry in meta.get("scalars", {}).items():
        state.setdefault(int(index), {}).update(entry)
    groups = meta["param_groups"]
    for group in groups:
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_to_files() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda/{i}"] = s
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64))
    version, internal, gauss = random.getstate()
    meta = {"numpy": {"kind": kind, "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": {"version": version, "state": list(internal), "gauss": gauss}}
    return tensors, meta


def rng_from_files(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = sorted((k for k in tensors if k.startswith("cuda/")), key=lambda k: int(k.split("/")[1]))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in cuda][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(states)
    n = meta["numpy"]
    np.random.set_state((n["kind"], tensors["numpy"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    p = meta["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


@dataclass
class TrainingState:
    """What `state/` holds, read back for resume."""

    path: Path
    progress: dict[str, Any]
    trainable: dict[str, torch.Tensor]
    method: dict[str, Any]
    optimizer_tensors: dict[str, torch.Tensor]
    optimizer_meta: dict[str, Any]
    scheduler: dict[str, Any]
    rng_tensors: dict[str, torch.Tensor]
    rng_meta: dict[str, Any]


def write_state(folder: Path, *, progress: dict[str, Any], trainable: dict[str, torch.Tensor],
                method_state: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler: Any) -> list[str]:
    state = folder / STATE_DIR
    state.mkdir()
    write_tensors(state / "trainable.safetensors", trainable)
    write_json(state / "method.json", method_state)
    opt_tensors, opt_meta = optimizer_to_files(optimizer)
    write_tensors(state / "optimizer.safetensors", opt_tensors)
    write_json(state / "optimizer.json", opt_meta)
    write_json(state / "scheduler.json", scheduler.state_dict())
    rng_tensors, rng_meta = rng_to_files()
    write_tensors(state / "rng.safetensors", rng_tensors)
    write_json(state / "progress.json", {**progress, "rng": rng_meta})
    return [f"{STATE_DIR}/{p.name}" for p in sorted(state.iterdir())]


def read_state(checkpoint: Path) -> TrainingState:
    state = checkpoint / STATE_DIR
    progress = read_json(state / "progress.json")
    return TrainingState(
        path=checkpoint,
        progress=progress,
        trainable=load_file(str(state / "trainable.safetensors")),
        method=read_json(state / "method.json"),
        optimizer_tensors=load_file(str(state / "optimizer.safetensors")),
        optimizer_meta=read_json(state / "optimizer.json"),
        scheduler=read_json(state / "scheduler.json"),
        rng_tensors=load_file(str(state / "rng.safetensors")),
        rng_meta=progress["rng"],
    )


def resumable_checkpoint(run: RunDir) -> Path | None:
    """The newest complete checkpoint that has `state/` (checkpoints saved with save.state = false lack it)."""
    for ck in reversed(run.checkpoints(complete_only=True)):
        if (ck.path / STATE_DIR / "progress.json").is_file():
            return ck.path
    return None


def checkpoint_epoch_step(path: Path) -> tuple[int, int]:
    parsed = parse_checkpoint_name(path.name)
    if parsed is None:
        raise ValueError(f"{path} is not a checkpoint folder")
    return parsed
