"""The run directory: the only channel between the TUI, the supervisor and the trainer.

Layout and ownership are fixed in DESIGN.md. This module names every path, reads status and events
the way every reader must (tolerating a half-written last line and a directory still being created),
and tells `lost` runs from live ones by the supervisor's flock.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from engine import atomic

STATES = ("starting", "running", "stopping", "finished", "failed", "stopped", "lost")
ALIVE_STATES = frozenset({"starting", "running", "stopping"})
CONTROL_REQUESTS = ("stop", "save-now", "sample-now")
STARTING_GRACE_S = 15.0  # a run dir with no status yet counts as starting for this long

_RUN_ID = re.compile(r"^\d{8}-\d{6}-[A-Za-z0-9_.-]+$")
_CKPT = re.compile(r"^e(\d{4,})-s(\d{8,})$")
_SAMPLE = re.compile(r"^p(\d{2,})-s(\d+)\.png$")


def new_run_id(config_name: str, now: float | None = None) -> str:
    """`<UTC yyyymmdd-HHMMSS>-<config name>`; the name is reduced to safe characters."""
    stamp = datetime.fromtimestamp(time.time() if now is None else now, tz=timezone.utc)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", config_name).strip("._") or "run"
    return f"{stamp:%Y%m%d-%H%M%S}-{safe}"


def is_run_id(name: str) -> bool:
    return bool(_RUN_ID.match(name))


def checkpoint_name(epoch: int, step: int) -> str:
    return f"e{epoch:04d}-s{step:08d}"


def parse_checkpoint_name(name: str) -> tuple[int, int] | None:
    m = _CKPT.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def sample_name(prompt_index: int, seed: int) -> str:
    return f"p{prompt_index:02d}-s{seed:04d}.png"


def parse_sample_name(name: str) -> tuple[int, int] | None:
    m = _SAMPLE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    epoch: int
    step: int

    @property
    def complete(self) -> bool:
        return (self.path / "COMPLETE").exists()


class RunDir:
    """Paths and readers for one run directory. Cheap to construct; touches no file until asked."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- paths -------------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def config_path(self) -> Path:
        return self.path / "config.toml"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    @property
    def events_path(self) -> Path:
        return self.path / "events.jsonl"

    @property
    def log_path(self) -> Path:
        return self.path / "train.log"

    @property
    def lock_path(self) -> Path:
        return self.path / "lock"

    @property
    def control_dir(self) -> Path:
        return self.path / "control"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def samples_dir(self) -> Path:
        return self.path / "samples"

    @property
    def best_path(self) -> Path:
        """The checkpoint the user marked as best on the contact sheet (written by the TUI)."""
        return self.path / "best.json"

    @property
    def project_dir(self) -> Path:
        return self.path.parent.parent

    # --- status ------------------------------------------------------------------------------
    def read_status(self) -> dict[str, Any] | None:
        """The last status the supervisor wrote, or None while the run is still being created."""
        try:
            return json.loads(self.status_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError, IsADirectoryError):
            return None

    def write_status(self, status: dict[str, Any]) -> None:
        """Only the supervisor (and `tunelab stop --force` for a lost run) calls this."""
        atomic.write_json(self.status_path, status)

    def update_status(self, **changes: Any) -> dict[str, Any]:
        status = self.read_status() or {}
        status.update(changes)
        self.write_status(status)
        return status

    def take_lock(self, wait: float) -> int | None:
        """An fd holding the exclusive flock on `lock` (close it to release), or None if another
        process still holds it after `wait` seconds (a reader's shared probe lasts microseconds,
        a supervisor the whole run)."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                os.close(fd)
                return None
            time.sleep(0.05)

    def lock_held(self) -> bool:
        """True while some process (the supervisor) holds an exclusive flock on `lock`."""
        try:
            fd = os.open(self.lock_path, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return True
            raise
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def state(self, status: dict[str, Any] | None = None) -> str:
        """The state to show: the status's state, except `lost` when it claims to be alive unlocked."""
        status = self.read_status() if status is None else status
        if status is None:
            # The launcher creates the folder a moment before the supervisor writes its first status.
            if self.lock_held() or self._younger_than(STARTING_GRACE_S):
                return "starting"
            return "lost"
        state = status.get("state", "lost")
        if state in ALIVE_STATES and not self.lock_held():
            return "lost"
        return state if state in STATES else "lost"

    def _younger_than(self, seconds: float) -> bool:
        try:
            return time.time() - self.path.stat().st_mtime < seconds
        except FileNotFoundError:
            return False

    # --- control -----------------------------------------------------------------------------
    def request(self, name: str) -> Path:
        """Drop a control request file the trainer polls (stop, save-now, sample-now)."""
        if name not in CONTROL_REQUESTS:
            raise ValueError(f"unknown control request {name!r}; accepted: {', '.join(CONTROL_REQUESTS)}")
        self.control_dir.mkdir(parents=True, exist_ok=True)
        path = self.control_dir / name
        if name == "stop" and not (self.control_dir / "stop-requested").exists():
            # Kept until the next supervisor starts, so a trainer killed after a stop request (from any
            # caller: the monitor, `tunelab stop`, SIGTERM) is recorded as stopped, not failed.
            atomic.write_text(self.control_dir / "stop-requested", json.dumps({"t": time.time(), "by": "request"}) + "\n")
        atomic.write_text(path, f"{time.time()}\n")
        return path

    def take_request(self, name: str) -> bool:
        """Trainer side: consume a request if present."""
        try:
            (self.control_dir / name).unlink()
            return True
        except FileNotFoundError:
            return False

    # --- checkpoints and samples -------------------------------------------------------------
    def checkpoints(self, complete_only: bool = False) -> list[Checkpoint]:
        out = []
        try:
            entries = list(os.scandir(self.checkpoints_dir))
        except FileNotFoundError:
            return []
        for e in entries:
            parsed = parse_checkpoint_name(e.name)
            if parsed and e.is_dir():
                ck = Checkpoint(Path(e.path), *parsed)
                if not complete_only or ck.complete:
                    out.append(ck)
        return sorted(out, key=lambda c: (c.step, c.epoch))

    def latest_complete_checkpoint(self) -> Checkpoint | None:
        cks = self.checkpoints(complete_only=True)
        return cks[-1] if cks else None

    def sample_columns(self) -> list[tuple[str, int, int]]:
        """Sample folders as (name, epoch, step), oldest first (epoch 0 = before training)."""
        try:
            entries = list(os.scandir(self.samples_dir))
        except FileNotFoundError:
            return []
        cols = []
        for e in entries:
            parsed = parse_checkpoint_name(e.name)
            if parsed and e.is_dir():
                cols.append((e.name, *parsed))
        return sorted(cols, key=lambda c: (c[2], c[1]))

    def iter_events(self) -> Iterator[dict[str, Any]]:
        """All complete events from the start (for one-shot readers such as `tunelab grid`)."""
        tail = EventTail(self.events_path)
        yield from tail.read_new()


class EventTail:
    """Follows `events.jsonl` by byte offset: each call returns only what was appended since the last.

    A half-written last line is held back until its newline arrives; a file that shrank (truncated or
    replaced) is read again from the start; lines that are not JSON objects are skipped.
    """

    def __init__(self, path: str | os.PathLike, offset: int = 0):
        self.path = Path(path)
        self.offset = offset
        self._ino: int | None = None

    def read_new(self, max_bytes: int = 64 << 20) -> list[dict[str, Any]]:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        try:
            st = os.fstat(fd)
            if st.st_size < self.offset or (self._ino is not None and st.st_ino != self._ino):
                self.offset = 0
            self._ino = st.st_ino
            if st.st_size == self.offset:
                return []
            data = os.pread(fd, min(st.st_size - self.offset, max_bytes), self.offset)
        finally:
            os.close(fd)
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        events = []
        for line in data[: end + 1].splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(obj, dict):
                events.append(obj)
        return events


def append_event(path: str | os.PathLike, kind: str, /, **fields: Any) -> dict[str, Any]:
    """Trainer side (rank 0 only): append one event as a single write, so lines never interleave."""
    event = {"t": round(time.time(), 3), "kind": kind, **fields}
    line = (json.dumps(event, separators=(",", ":"), default=_json_default) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)
    return event


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def list_runs(project_dir: str | os.PathLike) -> list[RunDir]:
    """The project's runs, newest first."""
    runs_dir = Path(project_dir) / "runs"
    try:
        names = [e.name for e in os.scandir(runs_dir) if e.is_dir() and is_run_id(e.name)]
    except FileNotFoundError:
        return []
    return [RunDir(runs_dir / n) for n in sorted(names, reverse=True)]
