"""The supervisor: `python -m engine.supervisor RUN_DIR [--resume]`, one per live run.

It owns the run's lifecycle record. It holds an exclusive flock on `lock` for as long as it lives (so a
reader that finds the status alive but the lock free shows the run as `lost`), writes `status.json`
atomically, and runs the trainer (`accelerate launch … -m engine.train RUN_DIR`) in its own session with
output appended to `train.log`. It ignores SIGHUP; a SIGTERM/SIGINT to it is a stop request.

It owns the stop's escalation (DESIGN.md: "if it does not exit in time, SIGTERM then SIGKILL to the whole
process group"). From the moment it sees a stop request — `control/stop` or `control/stop-requested`
(`tunelab stop`, the TUI), a SIGTERM/SIGINT to itself, the budget, the launcher killed by a signal — the
trainer has `launch.stop_timeout_s` seconds (default 600: room for a full fine-tune's multi-GB save) to
save its checkpoint and exit. Then the supervisor sends SIGTERM to the trainer's process group (and to
each worker that has a session of its own), and SIGKILL `KILL_GRACE_S` later, only to processes whose
start time still matches. A trainer that wrote its `stopped` or `finished` event but has not exited
`EXIT_GRACE_S` later (hung in teardown) gets the same. Each signal is recorded in train.log and in
status.json (`stop_escalation`); status.json also says when the stop was asked for and when the
escalation is due (`stop_requested_t`, `stop_deadline_t`, `stop_kill_after_s`), so `tunelab stop` can
tell the user. The run then ends `stopped` if a complete checkpoint from this attempt holds every step
it trained (or it trained none), else `failed` with an error saying the trainer did not stop in time.

Lifecycle written to status.json: starting → running → (stopping) → finished | failed | stopped.
Outcome rules, judged on the events the trainer wrote during this attempt:
  exit 0 and a `finished` event                      → finished (also when killed after that event)
  the supervisor escalated a stop that was not obeyed → stopped if a complete checkpoint holds every
                                                        step trained (or none was), else failed
  a `stopped` event, or a stop was requested          → stopped (killed on request is still stopped;
                                                        a crash with an `error` event is still failed)
  anything else                                       → failed, with `error` = cause + the last `error`
                                                        event's message, or the tail of train.log

It is also a child subreaper (Linux), so the trainer's workers (torchrun gives each its own session)
become its children if the launcher dies; whatever is left when the trainer exits is terminated before
the final status is written, so a `failed`/`stopped` run has no process left holding a GPU.

status.json fields: state, run_id, attempt (1 + resumes), resumed, history (one entry per earlier
attempt: state, started, ended, exit_code, error, trainer_pid), elapsed_prior_s (duration of earlier
attempts), host, boot_id, supervisor_pid/_start, trainer_pid/_pgid/_start (start = field 22 of
/proc/PID/stat, checked before any signal), command (the trainer's argv), started/ended (ISO, UTC)
and started_t/ended_t (unix), exit_code (negative: killed by that signal), signal, error (one-line
cause, then the log tail for a crash), stop_reason, stop_requested_t/stop_deadline_t/stop_kill_after_s
(once a stop was asked for), stop_escalation (list of {signal, t, why}); supervisor_lost when `tunelab
stop` settled it.

Exit status: 0 finished, 1 failed, 2 stopped, 3 another supervisor holds the lock, 4 refused to start
(not a run dir; already started without --resume; nothing to resume; the previous trainer still runs).

When `accelerate launch` dies of a signal while the trainer still runs (a SIGTERM to the trainer's
process group kills the launcher at once), that counts as a stop request: the trainer gets the stop
timeout to save and exit before what is left is terminated, and the run ends `stopped`.

`budget.max_hours` (counted over all attempts of the run) is enforced here: when it is reached the
trainer is asked to stop, as if by `tunelab stop`.

Environment (tests, debugging): TUNELAB_STOP_TIMEOUT_S overrides `launch.stop_timeout_s` (the older
name TUNELAB_STOP_GRACE_S is read too); TUNELAB_STOP_KILL_GRACE_S overrides KILL_GRACE_S and
TUNELAB_STOP_EXIT_GRACE_S overrides EXIT_GRACE_S.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine import launch
from engine.rundir import EventTail, RunDir

POLL_S = 0.2
TREE_SNAPSHOT_S = 2.0
LOCK_WAIT_S = 2.0
LOG_TAIL_LINES = 20
EXIT_CODES = {"finished": 0, "failed": 1, "stopped": 2}
# Seconds between the escalation's SIGTERM and its SIGKILL: a trainer that handles SIGTERM saves (without
# samples) and exits; one that is hung in a step or a collective never will.
KILL_GRACE_S = 60.0
# Seconds a trainer may take to exit after writing its `stopped`/`finished` event before it is terminated.
EXIT_GRACE_S = 60.0


def _env_seconds(*names: str) -> float | None:
    """The first of the environment variables `names` that is set, as seconds (a bad value is ignored)."""
    for name in names:
        raw = os.environ.get(name, "").strip()
        if raw:
            try:
                return max(0.0, float(raw))
            except ValueError:
                say(f"ignoring {name}={raw!r}: not a number of seconds")
    return None


def say(msg: str) -> None:
    """A line in train.log (the supervisor's stdout/stderr), marked as ours."""
    sys.stderr.write(f"[tunelab supervisor {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def _set_child_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


class Supervisor:
    def __init__(self, run_dir: RunDir, resume: bool, ready_fd: int | None):
        self.run = run_dir
        self.resume = resume
        self.ready_fd = ready_fd
        self.lock_fd = -1
        self.status: dict[str, Any] = {}
        self.trainer: subprocess.Popen | None = None
        self.tree: dict[int, launch.Proc] = {}
        self.term_requested_at: float | None = None
        self.stop_reason: str | None = None
        # The stop and its escalation (monotonic times; None: not yet).
        self.stop_timeout = 600.0  # launch.stop_timeout_s, read with the frozen config
        env_kill = _env_seconds("TUNELAB_STOP_KILL_GRACE_S")
        env_exit = _env_seconds("TUNELAB_STOP_EXIT_GRACE_S")
        self.kill_grace = KILL_GRACE_S if env_kill is None else env_kill
        self.exit_grace = EXIT_GRACE_S if env_exit is None else env_exit
        self.stop_at: float | None = None
        self.ended_at: float | None = None  # when the trainer's stopped/finished event was read
        self.term_sent_at: float | None = None
        self.kill_sent_at: float | None = None
        self.escalation_why = ""
        self.max_seconds = 0.0
        self.events: EventTail | None = None
        self.last_error_event: str | None = None
        self.saw_finished = False
        self.saw_stopped = False
        self.stopped_step = 0
        self.trained_steps = False  # a progress event in this attempt
        self.max_step = 0
        self.saved: list[tuple[int, str]] = []  # (step, path) of this attempt's checkpoint events

    # --- handshake with start_supervisor -------------------------------------------------------
    def answer(self, text: str) -> None:
        if self.ready_fd is None:
            return
        try:
            os.write(self.ready_fd, (text.rstrip("\n") + "\n").encode("utf-8"))
        except OSError:
            pass  # the caller is gone; fine
        try:
            os.close(self.ready_fd)
        except OSError:
            pass
        self.ready_fd = None

    def refuse(self, message: str, code: int) -> int:
        say(message)
        self.answer(message)
        return code

    # --- lock -------------------------------------------------------------------------------------
    def take_lock(self) -> bool:
        """The run's exclusive flock, held for the supervisor's life (see RunDir.take_lock)."""
        fd = self.run.take_lock(LOCK_WAIT_S)
        if fd is None:
            return False
        self.lock_fd = fd
        return True

    # --- status -----------------------------------------------------------------------------------
    def write(self, **changes: Any) -> None:
        self.status.update(changes)
        self.run.write_status(self.status)

    def begin_status(self) -> None:
        previous = self.run.read_status() or {}
        history = list(previous.get("history", []))
        prior = float(previous.get("elapsed_prior_s", 0.0))
        if self.resume and previous.get("state"):
            history.append({k: previous.get(k) for k in
                            ("state", "started", "ended", "exit_code", "error", "trainer_pid")})
            if previous.get("started_t") and previous.get("ended_t"):
                prior += max(0.0, previous["ended_t"] - previous["started_t"])
        now = time.time()
        self.status = {
            "state": "starting",
            "run_id": self.run.run_id,
            "attempt": len(history) + 1,
            "resumed": self.resume,
            "history": history,
            "elapsed_prior_s": round(prior, 3),
            "host": launch.hostname(),
            "boot_id": launch.boot_id(),
            "supervisor_pid": os.getpid(),
            "supervisor_start": launch.proc_start_time(os.getpid()),
            "trainer_pid": None,
            "trainer_pgid": None,
            "trainer_start": None,
            "started": launch.utc_iso(now),
            "started_t": now,
            "ended": None,
            "ended_t": None,
            "exit_code": None,
            "error": None,
        }
        self.run.write_status(self.status)

    # --- signals ----------------------------------------------------------------------------------
    def on_term(self, signum: int, frame: Any) -> None:
        if self.term_requested_at is None:
            self.term_requested_at = time.monotonic()
            self.stop_reason = self.stop_reason or f"supervisor got {launch.signal_name(signum)}"

    # --- main ---------------------------------------------------------------------------------------
    def main(self) -> int:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self.on_term)
        signal.signal(signal.SIGINT, self.on_term)
        if not self.run.path.is_dir() or not self.run.config_path.is_file():
            return self.refuse(f"{self.run.path} is not a run directory (no config.toml)", launch.EXIT_REFUSED)
        if not self.take_lock():
            return self.refuse(f"run {self.run.run_id} already has a live supervisor (its lock is held); "
                               f"refusing to start a second one", launch.EXIT_LOCKED)
        previous = self.run.read_status()
        if not self.resume and previous is not None:
            return self.refuse(f"run {self.run.run_id} was already started (state {previous.get('state')}); "
                               f"use `tunelab resume` to continue it", launch.EXIT_REFUSED)
        if previous is not None and launch.is_same_process(previous.get("trainer_pid"),
                                                           previous.get("trainer_start"), previous):
            return self.refuse(f"the previous trainer of run {self.run.run_id} (pid {previous['trainer_pid']}) "
                               f"is still running without a supervisor; `tunelab stop --force` it first",
                               launch.EXIT_REFUSED)
        if self.resume and self.run.latest_complete_checkpoint() is None:
            return self.refuse(f"run {self.run.run_id} has no complete checkpoint: nothing to resume from",
                               launch.EXIT_REFUSED)
        # Requests left from the previous attempt (a forced stop leaves control/stop unread).
        for name in ("stop", launch.STOP_MARKER, "save-now", "sample-now"):
            try:
                (self.run.control_dir / name).unlink()
            except FileNotFoundError:
                pass
        self.run.control_dir.mkdir(exist_ok=True)
        self.begin_status()
        self.answer(f"ok {os.getpid()}")
        say(("resuming" if self.resume else "starting") + f" run {self.run.run_id} (attempt "
            f"{self.status['attempt']}, supervisor pid {os.getpid()})")
        try:
            state = self.supervise()
        except Exception as e:  # the record must say what happened, whatever happened
            say(f"supervisor error: {e!r}")
            self.cleanup_leftovers()
            self.finish("failed", None, f"supervisor error: {e}")
            state = "failed"
        return EXIT_CODES.get(state, 1)

    def supervise(self) -> str:
        try:
            cfg = launch.load_frozen_config(self.run)
        except Exception as e:  # ConfigError or worse: nothing to run
            self.finish("failed", None, f"cannot load {self.run.config_path}: {e}")
            return "failed"
        port = launch.free_port_for(cfg.launch)
        if port != cfg.launch.main_process_port:
            say(f"port {cfg.launch.main_process_port} is in use here; rendezvous on port {port} instead")
            cfg.launch.main_process_port = port
        cmd = launch.trainer_command(self.run, cfg, resume=self.resume)
        env = launch.trainer_env(self.run, cfg)
        self.max_seconds = float(cfg.budget.max_hours) * 3600.0
        env_timeout = _env_seconds("TUNELAB_STOP_TIMEOUT_S", "TUNELAB_STOP_GRACE_S")
        self.stop_timeout = float(cfg.launch.stop_timeout_s) if env_timeout is None else env_timeout
        # Only events from this attempt decide its outcome.
        try:
            offset = self.run.events_path.stat().st_size
        except FileNotFoundError:
            offset = 0
        self.events = EventTail(self.run.events_path, offset)
        _set_child_subreaper()
        say("trainer: " + " ".join(cmd))
        with open(self.run.log_path, "ab") as log, open(os.devnull, "rb") as devnull:
            self.trainer = subprocess.Popen(cmd, stdin=devnull, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, env=env)
        pid = self.trainer.pid
        self.tree[pid] = launch.Proc(pid, launch.proc_start_time(pid) or 0, pid)
        self.write(state="running", trainer_pid=pid, trainer_pgid=pid,
                   trainer_start=self.tree[pid].start, command=cmd)

        last_snapshot = 0.0
        while True:
            rc = self.trainer.poll()
            self.read_events()
            if rc is not None:
                break
            now = time.monotonic()
            if now - last_snapshot >= TREE_SNAPSHOT_S:
                last_snapshot = now
                self.reap_orphans()
                # A scan of /proc: every few seconds, not every poll. Dead entries are dropped (data
                # loader workers come and go), orphans of the trainer are kept.
                live = {p.pid: p for p in launch.alive(self.tree.values())}
                live.update({p.pid: p for p in launch.process_tree(pid)})
                self.tree = live or self.tree
            self.watch_requests()
            self.escalate_if_due()
            time.sleep(POLL_S)
        self.read_events()
        if rc < 0:
            self.await_trainer_after_launcher_signal(rc)
        self.cleanup_leftovers()
        state, error = self.outcome(rc)
        self.finish(state, rc, error)
        return state

    def watch_requests(self) -> None:
        """Notice a stop request (whoever made it) or the budget running out; each starts the stop clock."""
        if self.stop_at is not None:
            return
        control = self.run.control_dir
        if (control / launch.STOP_MARKER).exists() or (control / "stop").exists():
            self.note_stop("stop requested", ask_trainer=False)  # the requester dropped control/stop
        elif self.term_requested_at is not None:
            self.note_stop(self.stop_reason or "signal", ask_trainer=True)
        elif self.max_seconds > 0:
            elapsed = self.status["elapsed_prior_s"] + time.time() - self.status["started_t"]
            if elapsed >= self.max_seconds:
                say(f"budget reached ({self.max_seconds / 3600:g} h); asking the trainer to stop")
                self.note_stop("budget reached", ask_trainer=True)

    def note_stop(self, reason: str, *, ask_trainer: bool) -> None:
        """A stop was asked for: the trainer has `stop_timeout` seconds from now to save and exit."""
        if ask_trainer:
            self.request_stop(by=self.stop_reason or reason)
        if self.stop_at is not None:
            return
        self.stop_at = time.monotonic()
        self.stop_reason = self.stop_reason or reason
        now = time.time()
        say(f"{self.stop_reason}: the trainer has {self.stop_timeout:g} s (launch.stop_timeout_s) to save a "
            f"checkpoint and exit; then its processes get SIGTERM, and SIGKILL {self.kill_grace:g} s later")
        self.write(state="stopping", stop_reason=self.stop_reason, stop_requested_t=round(now, 3),
                   stop_deadline_t=round(now + self.stop_timeout, 3), stop_kill_after_s=self.kill_grace)

    def escalation_due(self) -> tuple[float, str] | None:
        """When the trainer is to be terminated, and why: the stop timeout after a stop request, or the
        exit grace after its last event; None while neither applies."""
        due: list[tuple[float, str]] = []
        if self.stop_at is not None:
            due.append((self.stop_at + self.stop_timeout,
                        f"the trainer did not stop within {self.stop_timeout:g} s of the stop request "
                        f"(launch.stop_timeout_s)"))
        if self.ended_at is not None:
            kind = "finished" if self.saw_finished else "stopped"
            due.append((self.ended_at + self.exit_grace,
                        f"the trainer wrote its `{kind}` event but had not exited {self.exit_grace:g} s later"))
        return min(due) if due else None

    def escalate_if_due(self) -> None:
        """SIGTERM to the trainer's processes once the stop is overdue, SIGKILL `kill_grace` later."""
        now = time.monotonic()
        if self.term_sent_at is None:
            due = self.escalation_due()
            if due is None or now < due[0]:
                return
            procs = self.live_procs()
            if not procs:
                return
            self.term_sent_at = now
            self.escalation_why = due[1]
            self.signal_escalation(procs, signal.SIGTERM, f"{due[1]}; sending SIGTERM to its "
                                   f"{len(procs)} process(es), SIGKILL in {self.kill_grace:g} s if they live on")
        elif self.kill_sent_at is None and now >= self.term_sent_at + self.kill_grace:
            self.kill_sent_at = now
            procs = self.live_procs()
            if procs:
                self.signal_escalation(procs, signal.SIGKILL, f"{len(procs)} trainer process(es) still alive "
                                       f"{self.kill_grace:g} s after SIGTERM; sending SIGKILL")

    def signal_escalation(self, procs: list[launch.Proc], sig: int, message: str) -> None:
        say(message)
        launch.signal_procs(procs, sig)  # a pid whose start time changed is skipped
        record = {"signal": launch.signal_name(sig), "t": round(time.time(), 3), "why": message}
        self.write(stop_escalation=list(self.status.get("stop_escalation") or []) + [record])

    def live_procs(self) -> list[launch.Proc]:
        """The trainer and every process of its tree still alive (the supervisor's other children too)."""
        procs = list(self.tree.values())
        if self.trainer is not None:
            procs += launch.process_tree(self.trainer.pid)
        procs += launch.process_tree(os.getpid(), include_root=False)
        return launch.alive({p.pid: p for p in procs if p.pid != os.getpid()}.values())

    def request_stop(self, by: str) -> None:
        launch._mark_stop_requested(self.run, force=False, by=by)
        self.run.request("stop")

    def read_events(self) -> None:
        assert self.events is not None
        for ev in self.events.read_new():
            kind = ev.get("kind")
            if kind == "error":
                self.last_error_event = str(ev.get("message") or ev.get("error") or "error")
            elif kind == "progress":
                self.trained_steps = True
                self.max_step = max(self.max_step, _int(ev.get("step")))
            elif kind == "checkpoint" and ev.get("path"):
                self.saved.append((_int(ev.get("step")), str(ev["path"])))
            elif kind in ("finished", "stopped"):
                self.saw_finished = self.saw_finished or kind == "finished"
                self.saw_stopped = self.saw_stopped or kind == "stopped"
                self.stopped_step = max(self.stopped_step, _int(ev.get("step")))
                if self.ended_at is None:
                    self.ended_at = time.monotonic()

    def reap_orphans(self) -> None:
        """As subreaper, collect exited orphans (never the trainer: Popen waits for that one)."""
        for p in launch.process_tree(os.getpid(), include_root=False):
            if self.trainer is not None and p.pid == self.trainer.pid:
                continue
            try:
                os.waitpid(p.pid, os.WNOHANG)
            except ChildProcessError:
                pass
        # Zombies are skipped by process_tree, so also try the remembered pids.
        for pid in list(self.tree):
            if self.trainer is not None and pid == self.trainer.pid:
                continue
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass

    def await_trainer_after_launcher_signal(self, rc: int) -> None:
        """The launcher died of a signal while the trainer may live on: a SIGTERM to the trainer's process
        group (a scheduler's or a user's `kill -TERM -PGID`) kills `accelerate launch` at once, while the
        trainer takes it as a stop and is still saving. Treat it as a stop request (so a trainer that
        missed the signal stops too) and keep waiting for what is left, under the same stop timeout and
        escalation as any stop; the run then ends `stopped` with its checkpoint, like any stop."""
        left = self.live_procs()
        if not left:
            return
        if self.term_sent_at is None:  # not the escalation's own SIGTERM
            cause = launch.describe_exit(rc)
            say(f"accelerate launch was {cause}; the trainer still runs: asking it to stop and waiting for "
                f"its checkpoint")
            self.stop_reason = self.stop_reason or f"launcher {cause}"
            self.note_stop(self.stop_reason, ask_trainer=True)
        last_scan = time.monotonic()
        while left:
            self.read_events()
            self.reap_orphans()
            self.escalate_if_due()
            if self.kill_sent_at is not None and time.monotonic() - self.kill_sent_at > 10.0:
                break  # unkillable (uninterruptible sleep): cleanup_leftovers says so
            time.sleep(POLL_S)
            if time.monotonic() - last_scan >= TREE_SNAPSHOT_S:
                last_scan = time.monotonic()
                left = self.live_procs()  # workers forked meanwhile count too
            else:
                left = launch.alive(left)
        self.read_events()

    def cleanup_leftovers(self) -> None:
        """Processes of the trainer that outlived it (orphaned workers) are terminated."""
        left = [p for p in launch.alive(self.tree.values())]
        left += launch.process_tree(os.getpid(), include_root=False)
        left = list({p.pid: p for p in left if p.pid != os.getpid()}.values())
        if launch.alive(left):
            say(f"terminating {len(launch.alive(left))} leftover trainer process(es)")
            launch.terminate_procs(left, grace=2.0)
        self.reap_orphans()

    def outcome(self, rc: int) -> tuple[str, str | None]:
        cause = launch.describe_exit(rc)
        stop_asked = (self.run.control_dir / launch.STOP_MARKER).exists() or self.stop_reason is not None
        if self.saw_finished and (rc == 0 or self.term_sent_at is not None):
            return "finished", None  # killed only after it had finished: nothing is missing
        if self.term_sent_at is not None and not (rc > 0 and self.last_error_event):
            return self.escalated_outcome(rc, cause)
        if self.saw_stopped and rc == 0:
            return "stopped", None
        if (self.saw_stopped or stop_asked) and not (rc > 0 and self.last_error_event):
            note = None if rc == 0 else f"stopped on request ({cause})"
            return "stopped", note
        if self.last_error_event:
            return "failed", f"{cause}: {self.last_error_event}"
        if rc == 0:
            return "failed", "the trainer exited with code 0 without a `finished` event"
        tail = self.log_tail()
        return "failed", cause + (f"; last lines of train.log:\n{tail}" if tail else "")

    def escalated_outcome(self, rc: int, cause: str) -> tuple[str, str | None]:
        """The supervisor terminated a trainer that did not stop in time: `stopped` when nothing trained
        is lost (a complete checkpoint holds the last step, or no step was trained), else `failed`."""
        signals = "SIGTERM, then SIGKILL" if self.kill_sent_at is not None else "SIGTERM"
        why = f"{self.escalation_why}; the supervisor sent {signals}"
        if self.saw_stopped and rc == 0:
            return "stopped", f"{why}, and it then stopped"
        kept = self.stop_checkpoint()
        if kept:
            return "stopped", f"{why} ({cause}); its checkpoint {kept} is complete"
        if not self.trained_steps:
            return "stopped", f"{why} ({cause}) before it trained a step: nothing was lost"
        latest = self.run.latest_complete_checkpoint()
        since = (f"`tunelab resume` continues from checkpoints/{latest.path.name} (step {latest.step})"
                 if latest is not None else "there is no complete checkpoint to resume from")
        return "failed", (f"{why} ({cause}); no complete checkpoint holds its last steps (it had trained to "
                          f"step {self.max_step}); {since}")

    def stop_checkpoint(self) -> str | None:
        """A complete checkpoint of this attempt that holds every step it trained, if there is one."""
        need = max(self.max_step, self.stopped_step)
        for step, path in reversed(self.saved):
            if step >= need and (self.run.path / path / "COMPLETE").is_file():
                return path
        return None

    def log_tail(self) -> str:
        try:
            with open(self.run.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 16384))
                data = f.read().decode("utf-8", "replace")
        except OSError:
            return ""
        lines = [ln for ln in data.splitlines() if ln.strip() and not ln.startswith("[tunelab supervisor")]
        return "\n".join(lines[-LOG_TAIL_LINES:])

    def finish(self, state: str, rc: int | None, error: str | None) -> None:
        now = time.time()
        changes: dict[str, Any] = dict(state=state, ended=launch.utc_iso(now), ended_t=now, exit_code=rc,
                                       error=error)
        if rc is not None and rc < 0:
            changes["signal"] = -rc
        if self.stop_reason:
            changes["stop_reason"] = self.stop_reason
        self.write(**changes)
        say(f"run {state}" + (f": {error.splitlines()[0]}" if error else ""))


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.supervisor", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--resume", action="store_true", help="continue from the newest complete checkpoint")
    parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--detach", action="store_true",
                        help="fork and let the parent exit at once, so the caller has no child to reap")
    args = parser.parse_args(argv)
    if args.detach and os.fork() > 0:
        os._exit(0)  # the caller reaps this parent at once; the supervisor goes on as init's child
    return Supervisor(RunDir(args.run_dir.resolve()), args.resume, args.ready_fd).main()


if __name__ == "__main__":
    sys.exit(main())
