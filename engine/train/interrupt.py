"""Stopping while the trainer prepares: loading the base model, filling the latent and text caches,
drawing DreamBooth class images — minutes on a big dataset, before the first step.

SIGTERM stops preparation at once (its handler raises `StopBeforeTraining`). A stop *request* (the
`control/stop` file from `tunelab stop` or the TUI) is seen by a `StopRequestWatch` thread. Around the
base-model load — one long library call (10–60 s for SD 1.5) that trains nothing and writes nothing of
the run's (the tiny model's first build writes into a temporary folder it removes on the way out) —
the watch ends it at once: it sends SIGTERM to the main thread, whose handler raises out of the load
(`StopRequestWatch.interrupting`). Elsewhere it only raises a flag; the long loops call
`raise_if_stop_requested()` between batches, so a request takes effect at a safe point (never in the
middle of a cache or class-image write) within about a batch.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import Any, Iterator


class StopBeforeTraining(BaseException):
    """A stop while preparing: there is nothing to save, so stop at once. A BaseException, so that no
    `except Exception` on the way (a cache read) swallows it."""


_active: "StopRequestWatch | None" = None


class StopRequestWatch:
    """Looks for `control/stop` every `interval` seconds while active (a `with` block). Every process
    looks (the file is not consumed here), so all ranks stop at their next safe point."""

    def __init__(self, control_dir: Path, interval: float = 0.5) -> None:
        self.path = Path(control_dir) / "stop"
        self.interval = interval
        self.fired = False
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._interrupting = False
        self._thread = threading.Thread(target=self._watch, name="stop-request-watch", daemon=True)

    def __enter__(self) -> "StopRequestWatch":
        global _active
        _active = self
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        global _active
        self._done.set()
        if _active is self:
            _active = None

    def _watch(self) -> None:
        while not self._done.wait(self.interval):
            if self.path.exists():
                with self._lock:
                    self.fired = True
                    if self._interrupting:
                        _interrupt_main()
                return

    @contextlib.contextmanager
    def interrupting(self) -> Iterator[None]:
        """A block a stop request may end at once, wherever it is: the block must leave nothing
        half-written when an exception leaves it (the base-model load). Only where SIGTERM raises
        `StopBeforeTraining` (the trainer's main thread, see `loop.train`); elsewhere a plain block."""
        if not _sigterm_raises():
            yield
            return
        with self._lock:
            if self.fired:
                raise StopBeforeTraining()
            self._interrupting = True
        try:
            yield
        finally:
            with self._lock:  # the watch signals only while this holds, never after the block
                self._interrupting = False


def _sigterm_raises() -> bool:
    """The trainer's SIGTERM handler is installed (a Python handler: it raises StopBeforeTraining), and
    this is the main thread, which is where it runs."""
    handler = signal.getsignal(signal.SIGTERM)
    return threading.current_thread() is threading.main_thread() and callable(handler)


def _interrupt_main() -> None:
    """SIGTERM to the main thread (not the process: other threads keep running until it exits). A real
    signal, so a main thread blocked in a system call (a read from a slow disk) is woken too."""
    signal.pthread_kill(threading.main_thread().ident, signal.SIGTERM)


def raise_if_stop_requested() -> None:
    """Called between batches of the preparation loops: end preparation if a stop was requested."""
    if _active is not None and _active.fired:
        raise StopBeforeTraining()


def interrupting() -> contextlib.AbstractContextManager[None]:
    """The active watch's `interrupting()` block (a plain block when no watch is active)."""
    return _active.interrupting() if _active is not None else contextlib.nullcontext()
