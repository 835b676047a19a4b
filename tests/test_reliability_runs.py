"""Fault injection on live runs, with real processes: the TUI killed or hung up mid-run, and the real (tiny)
trainer killed mid-epoch and mid-save, stopped and resumed. See docs/reliability.md for the whole table."""
from __future__ import annotations

import asyncio
import fcntl
import os
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from engine import launch
from engine.config import dump_config
from engine.rundir import EventTail, RunDir
from tests.fake_trainer import FAST_ENV, kill_run_processes, wait_for, wait_state
from tests.projectkit import write_image

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(240)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TUNELAB_", "ACCELERATE_", "RELIABILITY_"))}
    env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **extra)
    return env


def tui_project(root: Path, name: str, epochs: int) -> Path:
    """A project the TUI can launch (its pre-launch `tunelab check` wants usable images)."""
    project = root / "projects" / name
    (project / "configs").mkdir(parents=True)
    (project / "project.toml").write_text(f'name = "{name}"\n')
    (project / "configs" / "hupcfg.toml").write_text(f'[train]\nepochs = {epochs}\n[model]\nbase = "tiny"\n')
    for i in range(2):
        write_image(project / "images" / f"img{i}.png", caption="a small test image")
    return project


def the_run(project: Path) -> RunDir | None:
    runs = sorted((project / "runs").glob("2*")) if (project / "runs").is_dir() else []
    return RunDir(runs[0]) if runs else None


def runs_tab_states(app) -> dict[str, str]:
    table = app.screen.query_one("#runs-table")
    return {str(k.value): str(table.get_cell(k, "state")) for k in table.rows}


async def wait_pilot(pilot, cond, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def state_in_a_new_tui(projects: Path, run: RunDir) -> str:
    """Open a fresh app on the projects folder, go to the project's Runs tab, read the run's state."""
    from tui.app import make_app

    async def body() -> str:
        app = make_app(projects, images="none", watch=False, animations=False)
        async with app.run_test(size=(160, 30)) as pilot:
            await wait_pilot(pilot, lambda: type(app.screen).__name__ == "HomeScreen" and app.screen.summaries,
                             what="the project list")
            await pilot.press("enter")
            await wait_pilot(pilot, lambda: type(app.screen).__name__ == "ProjectScreen", what="the project")
            await pilot.press("3")
            await wait_pilot(pilot, lambda: run.run_id in runs_tab_states(app), what="the run in the Runs tab")
            return runs_tab_states(app)[run.run_id]

    return asyncio.run(body())


# --- 1. SIGKILL the TUI mid-run --------------------------------------------------------------------

HEADLESS_TUI = """
import asyncio, sys, time
from pathlib import Path
from tui.app import make_app
from engine.rundir import RunDir

projects, project = Path(sys.argv[1]), Path(sys.argv[2])

async def until(pilot, cond, timeout=60):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, 'timed out'
        await pilot.pause(0.05)

async def main():
    app = make_app(projects, images='none', watch=False, animations=False)
    async with app.run_test(size=(160, 30)) as pilot:
        await until(pilot, lambda: type(app.screen).__name__ == 'HomeScreen' and app.screen.summaries)
        await pilot.press('enter')
        await until(pilot, lambda: type(app.screen).__name__ == 'ProjectScreen')
        await pilot.press('3')
        # The tab switch moves the keys to the runs table through a message: `n` is the Runs pane's.
        await until(pilot, lambda: app.focused is not None and app.focused.id == 'runs-table')
        await pilot.press('n')
        await until(pilot, lambda: type(app.screen).__name__ == 'ConfigPicker')
        await pilot.press('enter')
        runs = lambda: sorted((project / 'runs').glob('2*')) if (project / 'runs').is_dir() else []
        await until(pilot, lambda: runs() and RunDir(runs()[0]).state() == 'running')
        print('RUNNING', runs()[0], flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


def test_a_run_launched_from_a_tui_that_is_sigkilled_finishes_and_a_new_tui_shows_it(tmp_path):
    project = tui_project(tmp_path, "killtui", epochs=8)  # 32 steps of 0.25 s: still running after the kill
    env = clean_env(**FAST_ENV, TUNELAB_FAKE_STEP_S="0.25")
    tui = subprocess.Popen([sys.executable, "-c", HEADLESS_TUI, str(tmp_path / "projects"), str(project)],
                           cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    run = None
    try:
        line = tui.stdout.readline()
        assert line.startswith("RUNNING "), line + tui.stderr.read() if tui.poll() is not None else line
        run = RunDir(line.split(" ", 1)[1].strip())
        tui.kill()  # SIGKILL: no cleanup, no goodbye
        assert tui.wait(30) == -signal.SIGKILL
        killed_at = time.time()
        assert wait_state(run, {"finished", "failed", "stopped", "lost"}, timeout=90) == "finished"
        # The run did not die with its launcher: it went on training after the kill.
        assert any(e["kind"] == "progress" and e["t"] > killed_at for e in run.iter_events())
        assert state_in_a_new_tui(tmp_path / "projects", run) == "finished"
    finally:
        if tui.poll() is None:
            tui.kill()
        tui.wait()
        tui.stdout.close()
        tui.stderr.close()
        if run is not None:
            kill_run_processes(run)


# --- 2. Hang-up: the terminal the TUI runs in goes away ---------------------------------------------

# The child becomes a session leader with the pty as its controlling terminal (login_tty), then runs
# `tunelab PROJECTS_DIR`; closing the master side hangs the terminal up (SIGHUP to its session).
IN_A_TERMINAL = "import os, sys; os.login_tty(int(sys.argv[1])); os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"


class Terminal:
    """A pseudo-terminal running a command; the output is drained in a thread so the app never blocks."""

    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path, size: tuple[int, int] = (120, 32)):
        self.master, slave = os.openpty()
        self.resize(*size, fd=slave)
        self.proc = subprocess.Popen([sys.executable, "-c", IN_A_TERMINAL, str(slave), *argv], env=env, cwd=cwd,
                                     pass_fds=(slave,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(slave)
        self.output = bytearray()
        self.closed = False
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        while not self.closed:
            try:
                ready, _, _ = select.select([self.master], [], [], 0.1)
                if ready:
                    data = os.read(self.master, 65536)
                    if not data:
                        return
                    self.output += data
            except OSError:
                return

    def resize(self, cols: int, rows: int, fd: int | None = None) -> None:
        fcntl.ioctl(self.master if fd is None else fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait_for_output(self, text: str, since: int = 0, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            at = self.output.find(text.encode(), since)
            if at >= 0:
                return at + len(text)
            assert self.proc.poll() is None, f"the TUI exited ({self.proc.returncode})"
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never appeared on the terminal")

    def hang_up(self) -> None:
        self.closed = True
        self.reader.join(2)
        os.close(self.master)


def test_closing_the_terminal_of_the_tui_that_launched_a_run_leaves_the_run_going(tmp_path):
    project = tui_project(tmp_path, "hangupdemo", epochs=10)  # 40 steps of 0.25 s: outlives the hang-up
    env = clean_env(**FAST_ENV, TUNELAB_FAKE_STEP_S="0.25", TERM="xterm-256color")
    term = Terminal(["-m", "tui.cli", str(tmp_path / "projects"), "--images", "none"], env, tmp_path)
    run = None
    try:
        # Each key waits for what the previous one drew (keys are the focused widget's, and focus moves
        # through messages), never for a fixed time.
        at = term.wait_for_output("hangupdemo", timeout=60)  # the home screen lists the project
        term.type("\r")  # open it
        at = term.wait_for_output("Edit caption", since=at, timeout=60)  # the dataset table has the keys
        term.type("3")  # the Runs tab
        at = term.wait_for_output("Launch", since=at, timeout=60)  # the footer shows the Runs pane's keys
        term.type("n")  # launch…
        at = term.wait_for_output("hupcfg", since=at, timeout=60)
        term.type("\r")  # …the only config
        run = wait_for(lambda: the_run(project), timeout=60, what="the run launched from the TUI")
        wait_state(run, "running", timeout=60)
        # The terminal shrinks to 20x10 and back while the run goes on: the TUI redraws and lives on.
        drawn = len(term.output)
        term.resize(20, 10)
        term.wait_for_output("\x1b", since=drawn, timeout=60)  # something was drawn at 20x10
        drawn = len(term.output)
        term.resize(120, 32)
        term.wait_for_output("Launch", since=drawn, timeout=60)  # and the full footer again at 120x32
        assert term.proc.poll() is None
        status = run.read_status()
        assert os.getsid(status["supervisor_pid"]) != os.getsid(term.proc.pid)

        term.hang_up()  # the terminal (an SSH session, a closed window) goes away
        assert term.proc.wait(30) != 0  # the TUI got SIGHUP (or EIO) and ended
        hung_up_at = time.time()
        assert wait_state(run, {"finished", "failed", "stopped", "lost"}, timeout=90) == "finished"
        assert any(e["kind"] == "progress" and e["t"] > hung_up_at for e in run.iter_events())
    finally:
        if not term.closed:
            term.hang_up()
        if term.proc.poll() is None:
            term.proc.kill()
        term.proc.wait()
        if run is not None:
            kill_run_processes(run)


# --- 3, 4, 7. The real trainer: stop, SIGKILL mid-epoch, SIGKILL mid-save, resume ------------------

# Runs the real trainer (`python -m engine.train`) with two test hooks: a pause after each optimiser step
# (so a kill lands mid-epoch), and a pause inside one checkpoint save, after its state files are written
# and before COMPLETE (so a kill lands mid-save). A marker file says the save is under way.
HOOKED_TRAINER = '''
import os, sys, time
from engine.train import checkpoint as ckpt, loop

STEP_S = float(os.environ.get("RELIABILITY_STEP_S") or 0)
SAVE_S = float(os.environ.get("RELIABILITY_SAVE_S") or 0)
SAVE_FROM = int(os.environ.get("RELIABILITY_SAVE_FROM_STEP") or 0)  # only saves at this step or later pause
LOAD_S = float(os.environ.get("RELIABILITY_LOAD_S") or 0)

if LOAD_S:
    # A slow base-model load (SD 1.5 from a cold disk: 10-60 s inside library calls): a marker file, then
    # one blocking sleep before the real load.
    from pathlib import Path
    from engine.train import models
    real_load = models.load_components
    def slow_load(*args, **kw):
        (Path(os.environ["TUNELAB_RUN_DIR"]) / "LOADING").write_text(str(os.getpid()))
        time.sleep(LOAD_S)
        return real_load(*args, **kw)
    models.load_components = slow_load

if STEP_S:
    real_step = loop.train_step
    def slow_step(s, micro_batches):
        loss = real_step(s, micro_batches)
        time.sleep(STEP_S)
        return loss
    loop.train_step = slow_step

if SAVE_S:
    real_write_state = ckpt.write_state
    def slow_write_state(folder, **kw):
        files = real_write_state(folder, **kw)
        if int(kw["progress"]["step"]) >= SAVE_FROM:
            (folder / "SAVING").write_text(str(os.getpid()))
            time.sleep(SAVE_S)
        return files
    ckpt.write_state = slow_write_state

from engine.train.__main__ import main
sys.exit(main())
'''


class TrainerRun:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        from tests.train_fixtures import make_project, tiny_config

        self.mp = monkeypatch
        hooks = root / "hooks"
        hooks.mkdir()
        (hooks / "hooked_trainer.py").write_text(HOOKED_TRAINER)
        for k in list(os.environ):
            if k.startswith(("TUNELAB_", "RELIABILITY_")) and k != "TUNELAB_CACHE":  # keep the built tiny model
                monkeypatch.delenv(k)
        monkeypatch.setenv("PYTHONPATH", str(hooks))
        monkeypatch.setenv("TUNELAB_TRAINER_MODULE", "hooked_trainer")
        monkeypatch.setenv("TUNELAB_NO_ACCELERATE", "1")
        monkeypatch.setenv("TUNELAB_STOP_TIMEOUT_S", "60")
        self.project = make_project(root, n=4, goals=False)
        cfg = tiny_config(**{"train.epochs": 3, "train.batch_size": 1})  # 4 steps per epoch, 12 in all
        cfg.save.every_n_epochs = 1
        cfg.sample.at_start = False
        (self.project / "configs").mkdir()
        (self.project / "configs" / "tiny.toml").write_text(dump_config(cfg))
        self.run = launch.create_run(self.project, "tiny")
        self.tail = EventTail(self.run.events_path)
        self.seen: list[dict] = []

    def hooks(self, step_s: float = 0.0, save_s: float = 0.0, save_from_step: int = 0, load_s: float = 0.0) -> None:
        self.mp.setenv("RELIABILITY_LOAD_S", str(load_s))
        self.mp.setenv("RELIABILITY_STEP_S", str(step_s))
        self.mp.setenv("RELIABILITY_SAVE_S", str(save_s))
        self.mp.setenv("RELIABILITY_SAVE_FROM_STEP", str(save_from_step))

    def events(self, kind: str | None = None, since: float = 0.0) -> list[dict]:
        self.seen += self.tail.read_new()
        return [e for e in self.seen if (kind is None or e["kind"] == kind) and e["t"] >= since]

    def wait_event(self, kind: str, since: float, timeout: float = 120, where=lambda e: True) -> dict:
        def found():
            assert self.run.state() not in ("failed", "lost"), self.run.log_path.read_text()[-3000:]
            return next((e for e in self.events(kind, since) if where(e)), None)

        return wait_for(found, timeout, interval=0.05, what=f"a {kind} event")

    def attempt_started(self) -> float:
        return float(self.run.read_status()["started_t"])

    def kill_trainer(self) -> None:
        os.killpg(self.run.read_status()["trainer_pgid"], signal.SIGKILL)


def progress_steps(events: list[dict]) -> list[int]:
    return [e["step"] for e in events if e["kind"] == "progress"]


@pytest.mark.slow
def test_the_real_trainer_survives_stop_a_kill_mid_epoch_and_a_kill_mid_save(tmp_path, monkeypatch, tiny_base):
    # tiny_base: build the model here, not inside the trainer while the event clock runs
    t = TrainerRun(tmp_path, monkeypatch)
    rd = t.run
    try:
        # 7. Stop request mid-epoch 2: a checkpoint at that step, state `stopped`.
        t.hooks(step_s=0.4)
        launch.start_supervisor(rd)
        t.wait_event("checkpoint", 0)  # end of epoch 1 (step 4)
        t.wait_event("progress", 0, where=lambda e: e["step"] >= 5)
        assert launch.stop_run(rd, timeout=120) == "stopped"
        (stopped,) = t.events("stopped")
        stop_step = stopped["step"]
        assert 5 <= stop_step < 12 and stopped["reason"] == "request"
        stop_ck = rd.latest_complete_checkpoint()
        assert stop_ck.step == stop_step and rd.read_status()["exit_code"] == 0

        # 3. Resume continues from the stop's checkpoint; SIGKILL the trainer mid-epoch.
        launch.resume_run(rd)
        began = t.attempt_started()
        resumed = t.wait_event("resumed", began)
        assert resumed["checkpoint"] == f"checkpoints/{stop_ck.path.name}" and resumed["step"] == stop_step
        assert t.wait_event("start", began)["resumed_from_step"] == stop_step
        mid = t.wait_event("progress", began, where=lambda e: e["step"] > stop_step and e["step"] % 4 != 0)
        t.kill_trainer()
        killed_at = time.monotonic()
        assert wait_state(rd, {"failed", "stopped", "finished"}, timeout=10) == "failed"
        assert time.monotonic() - killed_at < 5
        assert rd.read_status()["error"].startswith("killed by signal 9 (SIGKILL)")
        assert progress_steps(t.events(since=began))[0] == stop_step + 1 and mid["step"] < 12
        assert rd.latest_complete_checkpoint() == stop_ck  # the kill lost steps, not checkpoints

        # 4. Resume again and SIGKILL inside the next save, before its COMPLETE is written.
        t.hooks(save_s=60)
        launch.resume_run(rd)
        began = t.attempt_started()
        assert t.wait_event("resumed", began)["step"] == stop_step  # again from the newest COMPLETE one
        partial = wait_for(lambda: next(iter(rd.checkpoints_dir.glob("*/SAVING")), None), 120,
                           what="a checkpoint save under way").parent
        t.kill_trainer()
        assert wait_state(rd, {"failed", "stopped", "finished"}, timeout=10) == "failed"
        assert partial.exists() and not (partial / "COMPLETE").exists()
        assert partial.name not in [c.path.name for c in rd.checkpoints()]
        assert rd.latest_complete_checkpoint() == stop_ck
        # A half-written folder under a proper checkpoint name (no COMPLETE) is not a checkpoint either.
        decoy = rd.checkpoints_dir / "e0009-s00000099"
        decoy.mkdir()
        (decoy / "state").mkdir()
        for f in (partial / "state").iterdir():
            (decoy / "state" / f.name).write_bytes(f.read_bytes())

        # Resume a last time: from the stop's checkpoint again, to the end.
        t.hooks()
        launch.resume_run(rd)
        began = t.attempt_started()
        assert wait_state(rd, {"finished", "failed"}, timeout=180) == "finished", rd.log_path.read_text()[-3000:]
        resumed = t.events("resumed", began)[0]
        assert resumed["checkpoint"] == f"checkpoints/{stop_ck.path.name}"
        assert not partial.exists()  # the partial save was cleared away, never used
        steps = progress_steps(t.events(since=began))
        assert steps == list(range(stop_step + 1, 13))
        # The step count equals an uninterrupted run's: 4 images x 3 epochs at batch 1, and every step
        # from 1 to the end was trained by some attempt.
        start = t.events("start")[0]
        assert start["total_steps"] == 12 and start["steps_per_epoch"] == 4
        assert set(progress_steps(t.events())) == set(range(1, 13))
        finished = t.events("finished")
        assert len(finished) == 1 and finished[0]["step"] == 12
        from engine.train.checkpoint import read_state

        assert read_state(rd.latest_complete_checkpoint().path).progress["step"] == 12
        st = rd.read_status()
        assert st["attempt"] == 4 and [h["state"] for h in st["history"]] == ["stopped", "failed", "failed"]
    finally:
        kill_run_processes(rd)


@pytest.mark.slow
def test_a_stop_while_the_base_model_loads_ends_the_run_at_once_as_stopped(tmp_path, monkeypatch, tiny_base):
    """`tunelab stop` (and a SIGTERM) while the base model loads: the load is cut short, not waited for;
    the run ends `stopped` with nothing trained and nothing written (was: seen only when the load returned)."""
    t = TrainerRun(tmp_path, monkeypatch)
    rd = t.run
    try:
        t.hooks(load_s=300)  # far longer than the test may wait
        launch.start_supervisor(rd)
        wait_for(lambda: (rd.path / "LOADING").exists(), 120, what="the base-model load under way")
        asked = time.monotonic()
        assert launch.stop_run(rd, timeout=60) == "stopped"
        assert time.monotonic() - asked < 20, "the stop waited for the load"
        (stopped,) = t.events("stopped")
        assert (stopped["step"], stopped["reason"]) == (0, "request")
        assert not t.events("progress") and not t.events("start") and not rd.checkpoints()
        assert not list(rd.path.glob("checkpoints/*")) and not list(rd.path.glob("samples/*"))
        status = rd.read_status()
        assert status["exit_code"] == 0 and status["error"] is None
        assert not (rd.control_dir / "stop").exists()  # consumed: it does not stop the next attempt

        # A SIGTERM to the trainer's process group (a scheduler) during the load: the same.
        run2 = launch.create_run(t.project, "tiny")
        tail2 = EventTail(run2.events_path)
        launch.start_supervisor(run2)
        wait_for(lambda: (run2.path / "LOADING").exists(), 120, what="the second run's load under way")
        sent = time.monotonic()
        os.killpg(run2.read_status()["trainer_pgid"], signal.SIGTERM)
        assert wait_state(run2, {"stopped", "failed", "finished"}, timeout=60) == "stopped"
        assert time.monotonic() - sent < 20
        seen = tail2.read_new()
        assert [e["kind"] for e in seen] == ["stopped"] and seen[0]["reason"] == "signal"
        assert not run2.checkpoints()
    finally:
        kill_run_processes(rd)
        for extra in sorted((t.project / "runs").glob("2*")):
            kill_run_processes(RunDir(extra))


@pytest.mark.slow
def test_a_real_trainer_stuck_in_a_save_past_the_stop_timeout_is_terminated_and_the_run_resumes(
        tmp_path, monkeypatch, tiny_base):
    """Stop escalation with the real trainer: it is stuck inside a checkpoint save (a hung disk, a save
    bigger than launch.stop_timeout_s allows), so it never reads the stop; the supervisor sends SIGTERM
    (the trainer only notes it: the save goes on), then SIGKILL. The run ends `failed`, saying so, the
    partial save is never used, and resume continues from the last complete checkpoint."""
    from tui.cli import main as tunelab

    t = TrainerRun(tmp_path, monkeypatch)
    rd = t.run
    monkeypatch.setenv("TUNELAB_STOP_TIMEOUT_S", "2")
    monkeypatch.setenv("TUNELAB_STOP_KILL_GRACE_S", "2")
    try:
        t.hooks(save_s=600, save_from_step=8)  # the epoch-1 save (step 4) is quick, epoch 2's hangs
        launch.start_supervisor(rd)
        assert t.wait_event("checkpoint", 0)["step"] == 4
        partial = wait_for(lambda: next(iter(rd.checkpoints_dir.glob("*/SAVING")), None), 120,
                           what="the epoch-2 save under way").parent
        asked = time.monotonic()
        assert tunelab(["stop", str(rd.path)]) == 0  # waits for the supervisor's outcome
        assert time.monotonic() - asked < 30
        st = rd.read_status()
        assert st["state"] == "failed" and [e["signal"] for e in st["stop_escalation"]] == ["SIGTERM", "SIGKILL"]
        assert st["error"].startswith("the trainer did not stop within 2 s of the stop request "
                                      "(launch.stop_timeout_s); the supervisor sent SIGTERM, then SIGKILL"), st["error"]
        assert "`tunelab resume` continues from checkpoints/e0001-s00000004 (step 4)" in st["error"]
        log = rd.log_path.read_text()
        assert "did not stop within 2 s of the stop request" in log and "sending SIGKILL" in log
        assert not (partial / "COMPLETE").exists() and rd.latest_complete_checkpoint().step == 4

        t.hooks()
        launch.resume_run(rd)
        began = t.attempt_started()
        assert wait_state(rd, {"finished", "failed"}, timeout=180) == "finished", rd.log_path.read_text()[-3000:]
        assert t.events("resumed", began)[0]["step"] == 4
        assert progress_steps(t.events(since=began)) == list(range(5, 13))
        assert not partial.exists()
    finally:
        kill_run_processes(rd)
