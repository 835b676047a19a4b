"""The supervisor: `python -m engine.supervisor RUN_DIR [--resume]`, one per live run.

It owns the run's lifecycle record. It holds an exclusive flock on `lock` for as long as it lives (so a
reader that finds the status alive but the lock free shows the run as `lost`), writes `status.json`
atomically, and runs the trainer (`accelerate launch … -m engine.train RUN_DIR`) in its own session with
output appended to `train.log`. It ignores SIGHUP; on SIGTERM/SIGINT it asks the trainer to stop
gracefully and escalates to SIGTERM/SIGKILL of the trainer's processes after a grace period.

Lifecycle written to status.json: starting → running → (stopping) → finished | failed | stopped.
Outcome rules, judged on the events the trainer wrote during this attempt:
  exit 0 and a `finished` event                      → finished
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
cause, then the log tail for a crash), stop_reason; supervisor_lost when `tunelab stop` settled it.

Exit status: 0 finished, 1 failed, 2 stopped, 3 another supervisor holds the lock, 4 refused to start
(not a run dir; already started without --resume; nothing to resume; the previous trainer still runs).

When `accelerate launch` dies of a signal while the trainer still runs (a SIGTERM to the trainer's
process group kills the launcher at once), that counts as a stop request: the trainer gets the stop
grace to save and exit before any leftover is terminated, and the run ends `stopped`.

`budget.max_hours` (counted over all attempts of the run) is enforced here: when it is reached the
trainer is asked to stop, as if by `tunelab stop`.

Environment: TUNELAB_STOP_GRACE_S (default 120): seconds between a SIGTERM/SIGINT to the supervisor and
escalating to SIGTERM (then SIGKILL) of the trainer's processes.
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
        self.escalated = False
        self.stop_reason: str | None = None
        self.grace = float(os.environ.get("TUNELAB_STOP_GRACE_S", "120"))
        self.max_seconds = 0.0
        self.events: EventTail | None = None
        self.last_error_event: str | None = None
        self.saw_finished = False
        self.saw_stopped = False

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
            self.stop_reason = f"supervisor got {launch.signal_name(signum)}"

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
            time.sleep(POLL_S)
        self.read_events()
        if rc < 0:
            self.await_trainer_after_launcher_signal(rc)
        self.cleanup_leftovers()
        state, error = self.outcome(rc)
        self.finish(state, rc, error)
        return state

    def watch_requests(self) -> None:
        marker = self.run.control_dir / launch.STOP_MARKER
        if self.status["state"] == "running" and marker.exists():
            self.stop_reason = self.stop_reason or "stop requested"
            self.write(state="stopping")
        if self.status["state"] == "running" and self.max_seconds > 0:
            elapsed = self.status["elapsed_prior_s"] + time.time() - self.status["started_t"]
            if elapsed >= self.max_seconds:
                say(f"budget reached ({self.max_seconds / 3600:g} h); asking the trainer to stop")
                self.stop_reason = "budget reached"
                self.request_stop(by="budget")
                self.write(state="stopping", stop_reason=self.stop_reason)
        if self.term_requested_at is not None:
            if self.status["state"] != "stopping":
                say(f"{self.stop_reason}; asking the trainer to stop (grace {self.grace:g} s)")
                self.request_stop(by=self.stop_reason or "signal")
                self.write(state="stopping", stop_reason=self.stop_reason)
            if not self.escalated and time.monotonic() - self.term_requested_at >= self.grace:
                say("the trainer did not stop in time; terminating it")
                self.escalated = True
                self.kill_tree(grace=10.0)

    def request_stop(self, by: str) -> None:
        launch._mark_stop_requested(self.run, force=False, by=by)
        self.run.request("stop")

    def read_events(self) -> None:
        assert self.events is not None
        for ev in self.events.read_new():
            kind = ev.get("kind")
            if kind == "error":
                self.last_error_event = str(ev.get("message") or ev.get("error") or "error")
            elif kind == "finished":
                self.saw_finished = True
            elif kind == "stopped":
                self.saw_stopped = True

    def kill_tree(self, grace: float) -> None:
        procs = list(self.tree.values())
        if self.trainer is not None:
            procs += launch.process_tree(self.trainer.pid)
        procs += launch.process_tree(os.getpid(), include_root=False)
        launch.terminate_procs(list({p.pid: p for p in procs}.values()), grace)

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
        missed the signal stops too) and give the trainer the stop grace to finish before anything left
        is terminated; the run then ends `stopped` with its checkpoint, like any stop."""
        left = [p for p in launch.alive(list(self.tree.values()) + launch.process_tree(os.getpid(), include_root=False))
                if p.pid != os.getpid()]
        if not left or self.escalated:
            return
        cause = launch.describe_exit(rc)
        say(f"accelerate launch was {cause}; the trainer still runs: asking it to stop and waiting up to "
            f"{self.grace:g} s for its checkpoint")
        self.stop_reason = self.stop_reason or f"launcher {cause}"
        self.request_stop(by=self.stop_reason)
        self.write(state="stopping", stop_reason=self.stop_reason)
        deadline = time.monotonic() + self.grace
        while time.monotonic() < deadline:
            self.read_events()
            self.reap_orphans()
            left = launch.alive(left)
            if not left:
                break
            time.sleep(POLL_S)
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
        if rc == 0 and self.saw_finished:
            return "finished", None
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
