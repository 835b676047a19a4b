"""Stopping while the trainer prepares: loading the base model, filling the latent and text caches,
drawing DreamBooth class images — minutes on a big dataset, before the first step.

SIGTERM stops preparation at once (its handler raises `StopBeforeTraining`). A stop *request* (the
`control/stop` file from `tunelab stop` or the TUI) is seen by a `StopRequestWatch` thread, which only
raises a flag; the long loops call `raise_if_stop_requested()` between batches, so a request takes effect
at a safe point (never in the middle of an import or a file write) within about a batch.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any


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
                self.fired = True
                return


def raise_if_stop_requested() -> None:
    """Called between batches of the preparation loops: end preparation if a stop was requested."""
    if _active is not None and _active.fired:
        raise StopBeforeTraining()
