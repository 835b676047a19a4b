"""Watching a project folder for changes made outside the app (an editor, `tunelab caption`, a sync).

A watchdog observer thread collects the paths of changed files and, after a short quiet spell,
posts one `FilesChanged` message to the widget that asked; handlers in the UI decide what each path
means (a caption reloaded, a conflict shown, the dataset rescanned). The app's own atomic writes
show up too, which is harmless: handlers compare contents, not events.

Switched off (`make_app(watch=False)`) for snapshots and most tests; `ProjectWatcher.flush_now`
lets a test deliver events without waiting.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from textual.message import Message
from textual.message_pump import MessagePump

# Folders under a project whose churn the dataset does not care about (runs have their own readers).
IGNORED_TOP = frozenset({".cache", "runs", ".git"})


class FilesChanged(Message):
    """Files under a project changed on disk (created, modified, moved or deleted)."""

    def __init__(self, project_dir: Path, paths: frozenset[Path]) -> None:
        super().__init__()
        self.project_dir = project_dir
        self.paths = paths


@dataclass
class _Pending:
    paths: set[Path]
    timer: threading.Timer | None = None


class ProjectWatcher:
    """Watches one project folder and posts `FilesChanged` to `target` (debounced by `delay` seconds)."""

    def __init__(self, project_dir: str | os.PathLike, target: MessagePump, delay: float = 0.15) -> None:
        self.project_dir = Path(project_dir).resolve()
        self.target = target
        self.delay = delay
        self._pending = _Pending(set())
        self._lock = threading.Lock()
        self._observer = None
        self.polling = False

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        from watchdog.events import FileSystemEventHandler
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:  # runs on the observer thread
                if event.event_type in ("opened", "closed_no_write"):
                    return
                for raw in (event.src_path, getattr(event, "dest_path", "")):
                    if raw:
                        watcher.note(Path(os.fsdecode(raw)))

        try:
            observer = Observer()
            observer.schedule(Handler(), str(self.project_dir), recursive=True)
            observer.daemon = True
            observer.start()
        except OSError:
            # inotify can run out of watches, and network filesystems send no events: poll instead.
            observer = PollingObserver(timeout=2.0)
            observer.schedule(Handler(), str(self.project_dir), recursive=True)
            observer.daemon = True
            observer.start()
            self.polling = True
        self._observer = observer

    def stop(self) -> None:
        with self._lock:
            if self._pending.timer is not None:
                self._pending.timer.cancel()
                self._pending.timer = None
        if self._observer is not None:
            self._observer.stop()
            # Joining can wait on an inotify read; the thread is a daemon, so a short wait is enough.
            self._observer.join(timeout=1.0)
            self._observer = None

    # --- events ------------------------------------------------------------------------------
    def relevant(self, path: Path) -> bool:
        try:
            rel = path.relative_to(self.project_dir)
        except ValueError:
            return False
        parts = rel.parts
        if not parts or parts[0] in IGNORED_TOP:
            return False
        # Atomic writes go through `.name.xxxx.tmp`; only the rename's destination matters.
        return not (parts[-1].startswith(".") and parts[-1].endswith(".tmp"))

    def note(self, path: Path) -> None:
        if not self.relevant(path):
            return
        with self._lock:
            self._pending.paths.add(path)
            if self._pending.timer is None:
                timer = threading.Timer(self.delay, self.flush_now)
                timer.daemon = True
                self._pending.timer = timer
                timer.start()

    def flush_now(self) -> None:
        with self._lock:
            paths = frozenset(self._pending.paths)
            self._pending = _Pending(set())
        if paths:
            self.target.post_message(FilesChanged(self.project_dir, paths))
