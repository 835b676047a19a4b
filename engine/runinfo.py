"""One-line summaries of runs (state, progress, loss, speed, ETA, elapsed time, cost), from the run dir.

`RunWatcher` is the incremental form for anything that refreshes (the TUI, `tunelab run --wait`): it keeps
an `EventTail`, so each refresh reads only the events appended since the last one, and `new_events`
holds those for a caller that prints or plots them. `summarize(run_dir)` is the one-shot form.
`find_run` turns a RUN argument (a run dir path, a run id or a unique prefix of one) into a RunDir.

Event fields read (extra fields are ignored, missing ones leave the summary's field None):
  start     epochs, total_steps
  progress  step, epoch (1-based, under way), epochs, total_steps, loss, lr, img_s, eta_s (seconds;
            an alive run's img_s and ETA only from a progress event of its current attempt: t >= status
            started_t)
  epoch     epoch (completed), epochs, seconds (the epoch's duration)
  checkpoint (path), sample (path: samples/<column>/<file>), warning, error (message), stopped (reason)
`stop_reason` of a stopped run: the supervisor's (status.json `stop_reason`), else the trainer's `stopped`.
(the trainer's full list is in engine/train/events.py; the fake trainer in tests/ writes the same)
Costs: elapsed hours (all attempts of the run) × `budget.gpu_hourly_cost` of the frozen config.
"""
from __future__ import annotations

import os
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.rundir import ALIVE_STATES, EventTail, RunDir, is_run_id, list_runs


@dataclass
class RunSummary:
    run_id: str
    path: str
    project: str
    config_name: str
    method: str | None = None
    description: str = ""
    state: str = "lost"
    epoch: int | None = None
    epochs: int | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    lr: float | None = None
    img_s: float | None = None
    eta_s: float | None = None
    elapsed_s: float | None = None
    epoch_seconds: float | None = None
    cost: float | None = None
    cost_per_epoch: float | None = None
    max_hours: float | None = None  # budget.max_hours, when set
    currency: str = "$"
    started: str | None = None  # the current (newest) attempt's start, as status.json has it
    ended: str | None = None
    first_started: str | None = None  # the run's first start: the first attempt's (status history)
    attempt: int = 1  # 1 + resumes
    exit_code: int | None = None
    error: str | None = None
    checkpoints: int = 0
    last_checkpoint: str | None = None
    sample_columns: int = 0
    warnings: int = 0
    last_warning: str | None = None
    stop_reason: str | None = None  # why a stopped/stopping run stops: "budget", "request", "signal", …
    stop_deadline_t: float | None = None  # stopping: when the supervisor SIGTERMs a trainer still running
    errors: list[str] = field(default_factory=list)
    last_event_t: float | None = None
    phase: str | None = None  # what the run does besides stepping: "class images 3/100", "pivotal: lora"

    @property
    def alive(self) -> bool:
        return self.state in ALIVE_STATES

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class RunWatcher:
    """Follows one run; `refresh()` is cheap enough to call a few times a second."""

    def __init__(self, run_dir: RunDir | str | os.PathLike):
        self.run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.tail = EventTail(self.run.events_path)
        self.new_events: list[dict[str, Any]] = []
        self._cfg: dict[str, Any] | None = None
        self._progress: dict[str, Any] = {}
        self._epoch_event: dict[str, Any] = {}
        self._start: dict[str, Any] = {}
        self._checkpoints = 0
        self._last_checkpoint: str | None = None
        self._sample_cols: set[str] = set()
        self._warnings = 0
        self._last_warning: str | None = None
        self._stopped_reason: str | None = None
        self._errors: list[str] = []
        self._last_t: float | None = None
        self._phase: str | None = None

    def _config(self) -> dict[str, Any]:
        if self._cfg is None:
            try:
                self._cfg = tomllib.loads(self.run.config_path.read_text(encoding="utf-8"))
            except FileNotFoundError:
                return {}  # still being created: try again next time
            except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError):
                self._cfg = {}
        return self._cfg

    def run_method_label(self) -> str:
        return str(self._config().get("method", "phase"))

    def _absorb(self, events: list[dict[str, Any]]) -> None:
        for ev in events:
            kind = ev.get("kind")
            t = ev.get("t")
            if isinstance(t, (int, float)):
                self._last_t = float(t)
            if kind == "progress":
                self._progress = ev
            elif kind == "epoch":
                self._epoch_event = ev
            elif kind == "start":
                self._start = ev
                self._stopped_reason = None
            elif kind == "checkpoint":
                self._checkpoints += 1
                self._last_checkpoint = Path(str(ev.get("path", ""))).name or None
            elif kind == "sample":  # one event per image (samples/<column>/<file>) or per column
                path = Path(str(ev.get("path", "")))
                self._sample_cols.add(path.parent.name if path.suffix else path.name)
            elif kind == "prior":
                done, total = ev.get("done"), ev.get("total")
                self._phase = None if done == total else f"class images {done}/{total}"
            elif kind == "phase":
                self._phase = f"{self.run_method_label()}: {ev.get('phase')}"
            elif kind == "warning":
                self._warnings += 1
                self._last_warning = str(ev.get("message", "warning"))
            elif kind == "stopped":
                self._stopped_reason = str(ev["reason"]) if ev.get("reason") else None
            elif kind == "resumed":
                self._stopped_reason = None
            elif kind == "error":
                self._errors.append(str(ev.get("message", "error")))

    def refresh(self, now: float | None = None) -> RunSummary:
        now = time.time() if now is None else now
        self.new_events = self.tail.read_new()
        self._absorb(self.new_events)
        status = self.run.read_status()
        state = self.run.state(status)
        status = status or {}
        cfg = self._config()
        train, budget = cfg.get("train", {}), cfg.get("budget", {})
        run_id = self.run.run_id
        s = RunSummary(
            run_id=run_id,
            path=str(self.run.path),
            project=self.run.project_dir.name,
            config_name=run_id[16:] if is_run_id(run_id) else run_id,
            method=cfg.get("method"),
            description=str(cfg.get("description", "")),
            state=state,
            started=status.get("started"),
            ended=status.get("ended") if state not in ALIVE_STATES else None,
            first_started=_first_started(status),
            attempt=_num(status.get("attempt")) or 1,
            exit_code=status.get("exit_code"),
            error=status.get("error"),
            currency=str(budget.get("currency", "$")),
            warnings=self._warnings,
            last_warning=self._last_warning,
            stop_reason=(status.get("stop_reason") or self._stopped_reason) if state in ("stopping", "stopped")
            else None,
            stop_deadline_t=_float(status.get("stop_deadline_t")) if state == "stopping" else None,
            errors=list(self._errors[-5:]),
            last_event_t=self._last_t,
            phase=self._phase,
        )
        p, e = self._progress, self._epoch_event
        s.epochs = _num(p.get("epochs")) or _num(e.get("epochs")) or _num(self._start.get("epochs")) \
            or _num(train.get("epochs"))
        s.total_steps = _num(p.get("total_steps")) or _num(self._start.get("total_steps"))
        s.step = _num(p.get("step"))
        epoch_done = _num(e.get("epoch"))
        s.epoch = _num(p.get("epoch"))
        if epoch_done is not None and (s.epoch is None or epoch_done > s.epoch):
            s.epoch = epoch_done
        s.loss = _float(p.get("loss"))
        s.lr = _float(p.get("lr"))
        s.epoch_seconds = _float(e.get("seconds"))
        # An alive run's rate and ETA come only from this attempt's progress: after a resume the last
        # progress event is the previous attempt's (another machine, perhaps), whose ETA would tick on.
        # A stopping run leaves its schedule (no ETA); a finished one keeps its last rate.
        attempt_t = _float(status.get("started_t"))
        p_t = _float(p.get("t"))
        this_attempt = attempt_t is None or p_t is None or p_t >= attempt_t
        if state not in ALIVE_STATES or this_attempt:
            s.img_s = _float(p.get("img_s", p.get("img_per_s", p.get("img/s"))))
        if state in ALIVE_STATES and state != "stopping" and p and this_attempt:
            eta = _float(p.get("eta_s", p.get("eta")))
            if eta is not None and p_t is not None:
                eta = max(0.0, eta - max(0.0, now - p_t))
            s.eta_s = eta
        s.elapsed_s = _elapsed(status, state, now, self._last_t)
        s.max_hours = _float(budget.get("max_hours")) or None
        rate = _float(budget.get("gpu_hourly_cost")) or 0.0
        if rate > 0 and s.elapsed_s is not None:
            s.cost = round(s.elapsed_s / 3600.0 * rate, 4)
            if s.epoch_seconds:
                s.cost_per_epoch = round(s.epoch_seconds / 3600.0 * rate, 4)
        complete = self.run.checkpoints(complete_only=True)
        s.checkpoints = len(complete) if complete else self._checkpoints
        s.last_checkpoint = complete[-1].path.name if complete else self._last_checkpoint
        s.sample_columns = len(self.run.sample_columns()) or len(self._sample_cols)
        return s


def _first_started(status: dict[str, Any]) -> str | None:
    """When the run first started: its first attempt's start (status.json `history`), else this one's."""
    history = status.get("history")
    if isinstance(history, list) and history and isinstance(history[0], dict) and history[0].get("started"):
        return str(history[0]["started"])
    return status.get("started")


def _num(v: Any) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _float(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _elapsed(status: dict[str, Any], state: str, now: float, last_event_t: float | None) -> float | None:
    started = _float(status.get("started_t"))
    if started is None:
        return None
    prior = _float(status.get("elapsed_prior_s")) or 0.0
    if state in ALIVE_STATES:
        end = now
    elif state == "lost":  # the supervisor died: the last sign of life is the best guess
        end = max(started, last_event_t or started)
    else:
        end = _float(status.get("ended_t")) or now
    return round(prior + max(0.0, end - started), 3)


def summarize(run_dir: RunDir | str | os.PathLike) -> RunSummary:
    return RunWatcher(run_dir).refresh()


# ---------------------------------------------------------------------------------------------
# Finding runs from the command line


def find_run(arg: str | os.PathLike, projects_dir: str | os.PathLike = "projects") -> RunDir:
    """A run dir path, or a run id (or a unique prefix of one) under PROJECTS_DIR/*/runs/.
    Raises LookupError with a message that says what was searched."""
    path = Path(arg)
    if path.is_dir() and ((path / "config.toml").exists() or (path / "status.json").exists()):
        return RunDir(path)
    name = path.name if path.name else str(arg)
    projects = Path(projects_dir)
    matches: list[Path] = []
    try:
        project_dirs = sorted(p for p in projects.iterdir() if p.is_dir())
    except OSError:
        project_dirs = []
    for proj in project_dirs:
        exact = proj / "runs" / name
        if is_run_id(name) and exact.is_dir():  # never `..` or `.`: those name the project or runs/ itself
            matches.append(exact)
    if not matches:
        for proj in project_dirs:
            matches += [r.path for r in list_runs(proj) if r.run_id.startswith(name)]
    if len(matches) == 1:
        return RunDir(matches[0])
    if not matches:
        raise LookupError(f"no run {str(arg)!r}: not a run directory, and no run with that id under "
                          f"{projects}/*/runs/")
    listed = ", ".join(str(m) for m in matches[:5])
    raise LookupError(f"{str(arg)!r} matches {len(matches)} runs ({listed}); give the full id or path")


def find_project(arg: str | os.PathLike, projects_dir: str | os.PathLike = "projects") -> Path:
    """A project folder path, or a project name under PROJECTS_DIR. Raises LookupError."""
    path = Path(arg)
    if path.is_dir():
        return path
    candidate = Path(projects_dir) / str(arg)
    if candidate.is_dir():
        return candidate
    raise LookupError(f"no project {str(arg)!r}: not a folder, and not a project in {projects_dir}/")


# ---------------------------------------------------------------------------------------------
# Formatting for tables and one-line reports


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{(s % 3600) // 60:02d}m"
    return f"{s // 86400}d{(s % 86400) // 3600:02d}h"


def fmt_cost(summary: RunSummary, amount: float | None = None) -> str:
    amount = summary.cost if amount is None else amount
    if amount is None:
        return "-"
    if 0 < amount < 0.01:  # a cent an epoch is common on a cheap box: "$0.00/epoch" would say nothing
        return f"{summary.currency}{amount:.4f}"
    return f"{summary.currency}{amount:.2f}"


def fmt_progress(summary: RunSummary) -> str:
    if summary.epoch is None:
        return "-" if summary.epochs is None else f"0/{summary.epochs}"
    return f"{summary.epoch}/{summary.epochs}" if summary.epochs else str(summary.epoch)


def fmt_time(iso: str | None) -> str:
    """status.json's `2026-05-28T19:06:40Z` as `2026-05-28 19:06:40` (UTC); `-` when unknown."""
    return (iso or "-").replace("T", " ").rstrip("Z")[:19]


def fmt_started(summary: RunSummary) -> str:
    """`2026-05-28 19:06:40`, and for a resumed run `… · attempt 2 since 2026-05-29 10:00:00` (UTC)."""
    text = fmt_time(summary.first_started or summary.started)
    if summary.attempt > 1 and summary.started:
        text += f" · attempt {summary.attempt} since {fmt_time(summary.started)}"
    return text


def fmt_stop_reason(summary: RunSummary) -> str:
    """Why a run stopped, in words: the supervisor's "budget reached" and the trainer's "budget" both
    name the limit."""
    reason = summary.stop_reason or ""
    if reason.startswith("budget"):
        text = (f"budget.max_hours = {summary.max_hours:g} h reached" if summary.max_hours
                else "budget.max_hours reached")
    else:
        text = {"request": "stop requested", "signal": "stopped by a signal"}.get(reason, reason)
    if summary.state == "stopping" and summary.stop_deadline_t:
        at = time.strftime("%H:%M:%S", time.localtime(summary.stop_deadline_t))
        text += f"; if the trainer has not exited by {at}, the supervisor ends it (SIGTERM, then SIGKILL)"
    return text
