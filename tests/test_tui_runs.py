"""The Runs tab: a live table of the project's runs, driven by the run directories alone."""
from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from pathlib import Path

import pytest
from textual.app import App, ComposeResult
from textual.widgets import DataTable, Footer, OptionList

from engine import launch
from engine.rundir import RunDir, checkpoint_name
from tests.fake_trainer import FAST_ENV, kill_run_processes, make_project, wait_state
from tui.widgets.runs_pane import (COLUMNS, ConfigPicker, ConfirmModal, ProblemsModal, RunRow, RunsPane, plan_layout,
                                   row_cells)

pytestmark = pytest.mark.timeout(60)

FIXED_NOW = 1_780_000_000.0  # a fixed clock for snapshots


def sync(fn):
    """Run an async test body on a fresh event loop (no async pytest plugin needed)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return asyncio.run(fn(*args, **kwargs))
    return wrapper


class PaneApp(App):
    """The Runs pane alone, as the project screen mounts it."""

    def __init__(self, project: Path, clock=None, poll: float = 0.2):
        super().__init__()
        self.project, self.poll = project, poll
        if clock is not None:
            self.clock = clock

    def compose(self) -> ComposeResult:
        yield RunsPane(self.project, poll=self.poll)
        yield Footer()


async def until(pilot, cond, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def table_state(app) -> dict[str, str]:
    table = app.query_one(DataTable)
    return {str(k.value): str(table.get_cell(k, "state")) for k in table.rows}


def write_run(project: Path, run_id: str, state: str = "finished", epochs: int = 3, steps: int = 12,
              done_epochs: int = 3, started: float = FIXED_NOW - 3600, rate: float = 2.0,
              samples: bool = False) -> RunDir:
    """A run dir as the supervisor and trainer leave it, written directly (no processes)."""
    rd = RunDir(project / "runs" / run_id)
    for d in (rd.control_dir, rd.checkpoints_dir, rd.samples_dir):
        d.mkdir(parents=True, exist_ok=True)
    rd.config_path.write_text(f'method = "lora"\ndescription = "demo run"\n[train]\nepochs = {epochs}\n'
                              f'[budget]\ngpu_hourly_cost = {rate}\ncurrency = "$"\n')
    ended = started + 1800 if state not in ("running", "starting", "stopping") else None
    status = {"state": state, "started_t": started, "started": "2026-05-28T19:06:40Z", "host": "h"}
    if ended:
        status.update(ended_t=ended, ended="2026-05-28T19:36:40Z", exit_code=0)
    rd.write_status(status)
    lines = []
    per_epoch = steps // epochs
    for step in range(1, done_epochs * per_epoch + 1):
        epoch = (step - 1) // per_epoch + 1
        lines.append({"t": started + step * 10, "kind": "progress", "step": step, "epoch": epoch,
                      "epochs": epochs, "total_steps": steps, "loss": round(0.5 / step + 0.05, 4),
                      "lr": 1e-4, "img_s": 3.5, "eta_s": (steps - step) * 10})
        if step % per_epoch == 0:
            lines.append({"t": started + step * 10, "kind": "epoch", "epoch": epoch, "epochs": epochs,
                          "step": step, "seconds": per_epoch * 10.0})
            lines.append({"t": started + step * 10, "kind": "val_loss", "epoch": epoch, "step": step,
                          "loss": round(0.6 / step + 0.06, 4)})
            name = checkpoint_name(epoch, step)
            (rd.checkpoints_dir / name).mkdir(exist_ok=True)
            (rd.checkpoints_dir / name / "COMPLETE").write_text("")
            lines.append({"t": started + step * 10, "kind": "checkpoint", "epoch": epoch, "step": step,
                          "path": f"checkpoints/{name}"})
    rd.events_path.write_text("".join(json.dumps(e) + "\n" for e in lines))
    rd.log_path.write_text("".join(f"step {i}: loss {0.5 / i + 0.05:.4f}\n" for i in range(1, 40)))
    return rd


@pytest.fixture
def fake_env(monkeypatch):
    for k, v in FAST_ENV.items():
        monkeypatch.setenv(k, v)
    for k in list(os.environ):
        if k.startswith("TUNELAB_FAKE_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("TUNELAB_NO_GPU", "1")
    started: list[RunDir] = []
    yield started
    for rd in started:
        kill_run_processes(rd)


def start_fake_run(project: Path, fake_env: list[RunDir], config: str = "x") -> RunDir:
    """Launch `config` of `project` with the fake trainer (`fake_env` kills it after the test)."""
    rd = launch.create_run(project, config)
    fake_env.append(rd)
    launch.start_supervisor(rd)
    return rd


def test_a_just_resumed_run_shows_no_eta_nor_img_s_until_its_new_attempt_reports_a_rate(tmp_path):
    import fcntl

    from engine.runinfo import RunWatcher
    from tui.commands.status import COLUMNS as STATUS_COLUMNS, row as status_row
    from tui.screens.monitor import stats_items
    from tui.widgets.loss_plot import TrainingHistory

    project = make_project(tmp_path)
    now = FIXED_NOW
    run = write_run(project, "20260101-000000-a", state="running", done_epochs=1, started=now - 3600)
    fd = os.open(run.lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # standing in for the supervisor: running, not lost
    try:
        first = RunWatcher(run).refresh(now - 3600 + 45)
        assert first.eta_s is not None and first.img_s == 3.5  # the first attempt's own rate
        # attempt 2 starts now; the newest progress event is attempt 1's (eta_s 80 at t - 3560)
        run.update_status(state="starting", started_t=now, attempt=2, resumed=True, elapsed_prior_s=1800.0)
        watcher = RunWatcher(run)
        summary = watcher.refresh(now + 1)
        assert summary.eta_s is None and summary.img_s is None  # not attempt 1's 3.5 img/s
        assert row_cells(RunRow(summary, None, None))["ETA"] == "-"
        assert row_cells(RunRow(summary, None, None))["img/s"] == "-"
        strip = dict(stats_items(summary, TrainingHistory()))  # the monitor's strip
        assert strip["ETA"] == "-" and strip["img/s"] == "-"
        status = dict(zip(STATUS_COLUMNS, status_row(summary)))  # tunelab status
        assert status["ETA"] == "-" and status["IMG/S"] == "-"
        with run.events_path.open("a") as f:
            f.write(json.dumps({"t": now + 2, "kind": "progress", "step": 5, "epoch": 2, "epochs": 3,
                                "total_steps": 12, "loss": 0.1, "img_s": 3.0, "eta_s": 70.0}) + "\n")
        run.update_status(state="running")
        summary = watcher.refresh(now + 2)
        assert summary.eta_s == 70.0 and row_cells(RunRow(summary, None, None))["ETA"] == "1m10s"
        assert summary.img_s == 3.0 and row_cells(RunRow(summary, None, None))["img/s"] == "3.0"
        run.update_status(state="finished", ended_t=now + 3, exit_code=0)
        assert watcher.refresh(now + 4).img_s == 3.0  # a run that ended keeps its last rate
    finally:
        os.close(fd)


def test_the_details_of_a_resumed_run_say_its_first_start_and_since_when_the_newest_attempt_runs(tmp_path, capsys):
    from engine.runinfo import RunWatcher
    from tui.cli import main
    from tui.widgets.runs_pane import details_text

    project = make_project(tmp_path)
    run = write_run(project, "20260101-000000-a", state="finished")
    once = RunWatcher(run).refresh(FIXED_NOW)
    assert "started 2026-05-28 19:06:40   ended" in details_text(once).plain  # one attempt: as it was
    first = {"state": "stopped", "started": "2026-05-28T19:06:40Z", "ended": "2026-05-28T19:36:40Z"}
    run.update_status(attempt=2, resumed=True, history=[first], started="2026-05-29T10:00:00Z")
    resumed = RunWatcher(run).refresh(FIXED_NOW)
    assert "started 2026-05-28 19:06:40 · attempt 2 since 2026-05-29 10:00:00" in details_text(resumed).plain
    assert main(["status", str(run.path)]) == 0
    assert "started:     2026-05-28 19:06:40 · attempt 2 since 2026-05-29 10:00:00" in capsys.readouterr().out


def test_lost_is_shown_for_a_running_status_nobody_holds(tmp_path):
    project = make_project(tmp_path)
    write_run(project, "20260101-000000-a", state="running", done_epochs=1)
    write_run(project, "20260101-000001-b", state="finished")

    @sync
    async def body():
        app = PaneApp(project, clock=lambda: FIXED_NOW)
        async with app.run_test(size=(160, 20)) as pilot:
            await until(pilot, lambda: len(table_state(app)) == 2, what="two rows")
            assert table_state(app) == {"20260101-000000-a": "lost", "20260101-000001-b": "finished"}
            table = app.query_one(DataTable)
            assert list(str(k.value) for k in table.rows) == ["20260101-000001-b", "20260101-000000-a"]
            row = [str(c) for c in table.get_row("20260101-000001-b")]
            assert row[3] == "3/3" and row[9] == "$1.00"  # 30 min at $2/h
            # The selected run's details say what a lost run needs.
            table.focus()
            await pilot.press("down")
            await pilot.pause()
            details = str(app.query_one("#run-details").render())
            assert "20260101-000000-a" in details and "lost:" in details and "K settles it" in details
    body()


def test_delete_asks_first_and_refuses_a_lost_run(tmp_path):
    project = make_project(tmp_path)
    lost = write_run(project, "20260101-000000-a", state="running", done_epochs=1)
    done = write_run(project, "20260101-000001-b", state="finished")

    @sync
    async def body():
        app = PaneApp(project, clock=lambda: FIXED_NOW)
        async with app.run_test(size=(160, 20)) as pilot:
            await until(pilot, lambda: len(table_state(app)) == 2)
            app.query_one(DataTable).focus()
            await pilot.press("down", "delete")  # the lost run
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmModal) and lost.path.exists()
            await pilot.press("up", "delete")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmModal)
            await pilot.press("y")
            await until(pilot, lambda: not done.path.exists(), what="deleted")
            await until(pilot, lambda: list(table_state(app)) == ["20260101-000000-a"])
    body()


def test_launch_shows_the_check_errors_in_a_modal_and_launches_nothing(tmp_path):
    project = make_project(tmp_path, 'description = "too few epochs"\n[train]\nepochs = -1\n')

    @sync
    async def body():
        app = PaneApp(project)
        async with app.run_test(size=(120, 30)) as pilot:
            await pilot.pause()
            app.query_one(DataTable).focus()
            await pilot.press("n")
            await until(pilot, lambda: isinstance(app.screen, ConfigPicker), what="the config picker")
            option = app.screen.query_one(OptionList).get_option_at_index(0)
            assert str(option.prompt) == "x  lora · too few epochs"  # each config with its method and description
            await pilot.press("enter")  # the only config, x
            await until(pilot, lambda: isinstance(app.screen, ProblemsModal), timeout=30, what="modal")
            body_text = str(app.screen.body)
            assert "train.epochs" in body_text
            assert not (project / "runs").exists() or not any((project / "runs").iterdir())
    body()


def test_the_config_picker_says_its_keys_and_escape_launches_nothing(tmp_path):
    project = make_project(tmp_path)

    @sync
    async def body():
        app = PaneApp(project)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            app.query_one(DataTable).focus()
            await pilot.press("n")
            await until(pilot, lambda: isinstance(app.screen, ConfigPicker), what="the config picker")
            hint = app.screen.query_one("#picker-keys")
            assert str(hint.render()) == "↑ / ↓ choose · enter launch · esc cancel"
            assert hint.region.width and app.screen.query_one(OptionList).region.bottom <= hint.region.y
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, ConfigPicker), what="closed")
            assert not (project / "runs").exists() or not any((project / "runs").iterdir())
    body()


def test_live_progress_stop_resume_and_a_second_tui_sees_the_same(tmp_path, fake_env, monkeypatch):
    monkeypatch.setenv("TUNELAB_FAKE_STEP_S", "0.15")
    monkeypatch.setenv("TUNELAB_FAKE_STEPS_PER_EPOCH", "4")
    project = make_project(tmp_path, "[train]\nepochs = 6\n")
    (project / "project.toml").write_text('name = "p"\n[goals]\naccuracy = ["a red circle"]\n')
    rd = start_fake_run(project, fake_env)

    @sync
    async def body():
        app = PaneApp(project)
        async with app.run_test(size=(160, 20)) as pilot:
            await until(pilot, lambda: table_state(app).get(rd.run_id) == "running", what="running")
            table = app.query_one(DataTable)
            seen = set()

            def progressed():
                seen.add(str(table.get_cell(rd.run_id, "epoch")))
                return len(seen - {"-", "0/6"}) >= 2

            await until(pilot, progressed, what="live progress")
            table.focus()
            await pilot.press("s")  # graceful stop
            await until(pilot, lambda: table_state(app).get(rd.run_id) == "stopped", what="stopped")
        assert rd.latest_complete_checkpoint() is not None

        # Re-attach: a second app sees the same truth from the run dir. A goal added meanwhile is not
        # sampled by this run (it froze its goals at launch), and the resume says so.
        (project / "project.toml").write_text('name = "p"\n[goals]\naccuracy = ["a red circle", "a blue cone"]\n')
        app2 = PaneApp(project)
        async with app2.run_test(size=(160, 20)) as pilot:
            await until(pilot, lambda: table_state(app2).get(rd.run_id) == "stopped")
            app2.query_one(DataTable).focus()
            await pilot.press("r")  # resume
            await until(pilot, lambda: table_state(app2).get(rd.run_id) in ("running", "finished"),
                        what="resumed")
            await until(pilot, lambda: any("Resumed" in n.message for n in app2._notifications), what="notice")
            notice = next(n.message for n in app2._notifications if "Resumed" in n.message)
            assert "goals changed since launch" in notice and "'a blue cone'" in notice
        wait_state(rd, "finished", timeout=30)
    body()


def test_snapshot_runs_tab(tmp_path, snap_compare, monkeypatch):
    monkeypatch.setenv("TUNELAB_NO_GPU", "1")
    project = make_project(tmp_path)
    write_run(project, "20260101-000000-lora", state="finished")
    write_run(project, "20260102-000000-full", state="running", done_epochs=1)  # no supervisor: lost
    write_run(project, "20260103-000000-dreambooth", state="stopped", done_epochs=2)
    from engine.contact_sheet import write_best
    write_best(RunDir(project / "runs" / "20260101-000000-lora"), "e0002-s00000008", now=FIXED_NOW)
    app = PaneApp(project, clock=lambda: FIXED_NOW, poll=0)

    async def loaded(pilot):
        await until(pilot, lambda: len(table_state(app)) == 3)
        app.query_one(DataTable).focus()
        await pilot.press("down")  # the lost run: its details say what to do
        await pilot.pause()

    assert snap_compare(app, terminal_size=(150, 14), run_before=loaded)


def screen_rows(table: DataTable) -> list[str]:
    """The table's lines as the terminal shows them."""
    return ["".join(seg.text for seg in table.render_line(y)) for y in range(table.size.height)]


def stop_cells(table: DataTable) -> list[str]:
    """Every stopping run's state cell as one string, whether its countdown is on the row's line
    (`stopping · TERM in 9m`) or on the line under it (a narrow table)."""
    lines = screen_rows(table)
    cells = []
    for i, line in enumerate(lines):
        col = line.find(" stopping")
        if col < 0:
            continue
        rest = line[col + 1:].split("  ")[0].strip()
        if rest != "stopping":
            cells.append(rest)
        elif i + 1 < len(lines):
            cells.append("stopping · " + lines[i + 1][col + 1:].split("  ")[0].strip())
    return cells


def header_columns(table: DataTable) -> set[str]:
    return set(screen_rows(table)[0].split())


def test_values_that_grow_while_the_run_goes_widen_their_columns_instead_of_being_cut(tmp_path):
    project = make_project(tmp_path)
    rd = write_run(project, "20260101-000000-lora", state="running", epochs=120, steps=720, done_epochs=0)
    assert rd.events_path.read_text() == ""  # just launched: epoch 0/120, no loss yet

    @sync
    async def body():
        app = PaneApp(project, clock=lambda: FIXED_NOW)
        async with app.run_test(size=(160, 12)) as pilot:
            table = app.query_one(DataTable)
            await until(pilot, lambda: any("0/120" in line for line in screen_rows(table)), what="first row")
            with rd.events_path.open("a") as f:
                f.write(json.dumps({"t": FIXED_NOW - 5, "kind": "progress", "step": 180, "epoch": 30,
                                    "epochs": 120, "total_steps": 720, "loss": 0.0577, "lr": 5e-3,
                                    "img_s": 108.25, "eta_s": 4000}) + "\n")
            await until(pilot, lambda: any("30/120" in line for line in screen_rows(table)), what="update")
            await pilot.pause()
            (line,) = [line for line in screen_rows(table) if "20260101-000000-lora" in line]
            assert "30/120" in line and "0.0577" in line and "108.2" in line
    body()


def _row(run_id: str, state: str = "running", cost: float | None = 1.25, best: str | None = "e0030-s00000180"):
    from engine.runinfo import RunSummary

    s = RunSummary(run_id=run_id, path="", project="p", config_name="lora", state=state, epoch=30, epochs=120,
                   step=180, total_steps=720, loss=0.0577, img_s=108.3, eta_s=3725.0, elapsed_s=9000.0,
                   cost=cost)
    return RunRow(s, 0.0612, best)


def test_the_table_plan_fits_100_columns_and_shows_everything_at_200():
    rows = [_row("20261201-222616-lora"), _row("20261201-222923-full", "finished")]
    wide = plan_layout(200, rows)
    assert wide.columns == COLUMNS and wide.bar >= 12
    assert wide.width(rows) <= 200
    # 100 columns: every value is whole; what goes first is the smoothed loss (the monitor plots it).
    narrow = plan_layout(100, rows)
    assert narrow.width(rows) <= 100 - 2 and "smoothed" not in narrow.columns
    assert set(COLUMNS) - set(narrow.columns) == {"smoothed"}
    # A long config name: img/s and elapsed go too, never the state, progress, epoch, loss or ETA.
    long = rows + [_row("20261201-222923-full-finetune-at-768px", "stopped")]
    plan = plan_layout(100, long)
    assert plan.width(long) <= 98 and set(COLUMNS) - set(plan.columns) == {"smoothed", "img/s", "elapsed"}
    # No run has a cost rate or a best mark: those empty columns go before anything with a value.
    bare = [_row("20261201-222616-lora", cost=None, best=None)]
    plan = plan_layout(100, bare)
    assert "smoothed" in plan.columns and "cost" not in plan.columns and plan.width(bare) <= 98


def test_a_narrow_terminal_shows_whole_values_and_a_wide_one_every_column(tmp_path):
    project = make_project(tmp_path)
    write_run(project, "20260101-000000-lora", state="finished", epochs=120, steps=720, done_epochs=120)

    @sync
    async def body():
        for size, must in (((100, 12), ("120/120", "$1.00")), ((200, 12), ("smoothed", "best", "120/120"))):
            app = PaneApp(project, clock=lambda: FIXED_NOW)
            async with app.run_test(size=size) as pilot:
                table = app.query_one(DataTable)
                await until(pilot, lambda: any("120/120" in line for line in screen_rows(table)))
                await pilot.pause()
                text = "\n".join(screen_rows(table))
                assert all(m in text for m in must), (size, text)
                assert max(len(line.rstrip()) for line in screen_rows(table)) <= size[0]
                assert table.max_scroll_x == 0, f"{size}: the table scrolls sideways"
    body()


def test_force_stop_asks_first_then_kills_a_run_that_ignores_stop(tmp_path, fake_env, monkeypatch):
    monkeypatch.setenv("TUNELAB_FAKE_STEP_S", "0.2")
    monkeypatch.setenv("TUNELAB_FAKE_IGNORE_STOP", "1")
    project = make_project(tmp_path, "[train]\nepochs = 50\n")
    rd = start_fake_run(project, fake_env)

    @sync
    async def body():
        app = PaneApp(project)
        async with app.run_test(size=(160, 20)) as pilot:
            await until(pilot, lambda: table_state(app).get(rd.run_id) == "running", what="running")
            app.query_one(DataTable).focus()
            await pilot.press("K")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmModal) and "Force stop" in app.screen.question
            # What happens, as it happens: SIGTERM lets the real trainer save a checkpoint (it did, in the
            # demo: the dialog used to promise "without saving a checkpoint"), SIGKILL as long after as
            # `tunelab stop --force` waits (engine.launch.FORCE_KILL_AFTER_S; the dialog said 5 s, the CLI 10 s).
            assert "SIGKILL 10 s later" in app.screen.question and "saves a checkpoint" in app.screen.question
            assert "without saving" not in app.screen.question
            await pilot.press("n")  # changed my mind: nothing happens
            await pilot.pause(0.5)
            assert not isinstance(app.screen, ConfirmModal) and rd.state() == "running"
            await pilot.press("K")
            await pilot.pause()
            await pilot.press("y")
            await until(pilot, lambda: table_state(app).get(rd.run_id) in ("stopped", "failed"), timeout=30,
                        what="killed")
        assert not rd.lock_held()  # the supervisor is gone too
    body()


def test_the_state_cell_says_what_the_supervisor_does_next_and_when():
    from tui.widgets.run_state import escalation_tag, read_escalation, short_wait

    asked = {"state": "stopping", "stop_requested_t": 1000.0, "stop_deadline_t": 1600.0, "stop_kill_after_s": 60}
    esc = read_escalation(asked)
    assert escalation_tag("stopping", esc, 1060.0) == "TERM in 9m"  # rounded up: never "in 0m"
    assert escalation_tag("stopping", esc, 1599.2) == "TERM in 1s"
    assert escalation_tag("stopping", esc, 1601.0) == "TERM due"
    termed = read_escalation({**asked, "stop_escalation": [{"signal": "SIGTERM", "t": 1601.0, "why": "…"}]})
    assert escalation_tag("stopping", termed, 1620.0) == "KILL in 41s"
    killed = read_escalation({**asked, "stop_escalation": [{"signal": "SIGTERM", "t": 1601.0},
                                                           {"signal": "SIGKILL", "t": 1661.0}]})
    assert escalation_tag("stopping", killed, 1662.0) == "KILL sent"
    # A trainer hung after its `finished` event gets SIGTERM with no stop request (no kill_after_s).
    assert escalation_tag("running", read_escalation({"stop_escalation": [{"signal": "SIGTERM", "t": 5.0}]}), 6) \
        == "TERM sent"
    assert escalation_tag("failed", killed, 1700.0) == ""  # ended: the details say it, not the column
    assert read_escalation({"state": "running"}) is None
    assert (short_wait(98.5), short_wait(100), short_wait(3600), short_wait(3 * 3600 + 300)) == \
        ("99s", "2m", "1h00m", "3h05m")


def test_a_stopping_run_shows_the_escalation_countdown_whole_at_100_to_200_columns(tmp_path):
    project = make_project(tmp_path)
    write_run(project, "20260101-000000-lora", state="finished", epochs=120, steps=720, done_epochs=120)
    rd = write_run(project, "20260102-000000-full-finetune", state="running", epochs=120, steps=720, done_epochs=30)
    rd.update_status(state="stopping", stop_reason="request", stop_requested_t=FIXED_NOW - 60,
                     stop_deadline_t=FIXED_NOW + 540, stop_kill_after_s=60)
    lock = rd.take_lock(wait=1)  # a live supervisor holds it
    clock = [FIXED_NOW]

    @sync
    async def body():
        for width in (100, 130, 160, 200):
            clock[0] = FIXED_NOW
            rd.update_status(stop_escalation=[])
            app = PaneApp(project, clock=lambda: clock[0], poll=0.1)
            async with app.run_test(size=(width, 14)) as pilot:
                table = app.query_one(DataTable)
                await until(pilot, lambda: stop_cells(table) == ["stopping · TERM in 9m"], what="TERM in")
                clock[0] = FIXED_NOW + 560
                rd.update_status(stop_escalation=[{"signal": "SIGTERM", "t": FIXED_NOW + 541, "why": "…"}])
                await until(pilot, lambda: stop_cells(table) == ["stopping · KILL in 41s"], what="KILL in")
                text = "\n".join(screen_rows(table))
                # Nothing cut: every value whole, no sideways scrolling, the other row's values intact.
                assert table.max_scroll_x == 0, (width, text)
                assert max(len(line.rstrip()) for line in screen_rows(table)) <= width
                for value in ("20260102-000000-full-finetune", "30/120", "120/120", "finished"):
                    assert value in text, (width, value, text)
                if width >= 160:
                    assert all(f" {c} " in text.splitlines()[0] + " " for c in ("smoothed", "img/s", "elapsed"))
                table.focus()
                await pilot.press("home")
                await pilot.pause()
                details = str(app.query_one("#run-details").render())
                at = time.strftime("%H:%M:%S", time.localtime(FIXED_NOW + 541))
                kill = time.strftime("%H:%M:%S", time.localtime(FIXED_NOW + 601))
                assert (f"stopping: stop requested; the supervisor sent SIGTERM at {at}; SIGKILL at {kill} "
                        "if it has not exited") in details
    try:
        body()
    finally:
        os.close(lock)


def test_a_stopping_runs_countdown_costs_no_column_at_100_to_130_columns(tmp_path):
    """Below ~130 columns the one-line `stopping · TERM in 9m` used to drop smoothed, img/s or elapsed
    until the run ended; the countdown now goes under the state, and the table keeps the columns it
    shows once the stop is over."""
    project = make_project(tmp_path)
    write_run(project, "20260101-000000-lora", state="finished", epochs=120, steps=720, done_epochs=120)
    rd = write_run(project, "20260102-000000-lora", state="running", epochs=120, steps=720, done_epochs=30)
    lock = rd.take_lock(wait=1)  # a live supervisor holds it
    clock = [FIXED_NOW]

    @sync
    async def body():
        for width in (100, 110, 120, 130):
            rd.update_status(state="running", stop_deadline_t=None, stop_escalation=[])
            app = PaneApp(project, clock=lambda: clock[0], poll=0.1)
            async with app.run_test(size=(width, 14)) as pilot:
                table = app.query_one(DataTable)
                await until(pilot, lambda: "30/120" in "\n".join(screen_rows(table)), what="running row")
                await pilot.pause(0.3)
                running = header_columns(table)
                rd.update_status(state="stopping", stop_reason="request", stop_requested_t=FIXED_NOW - 60,
                                 stop_deadline_t=FIXED_NOW + 540, stop_kill_after_s=60)
                await until(pilot, lambda: stop_cells(table) == ["stopping · TERM in 9m"], what="TERM in")
                assert header_columns(table) == running, (width, screen_rows(table))
                assert {"smoothed", "img/s", "elapsed"} & running == \
                    ({"img/s", "elapsed"} if width == 100 else {"smoothed", "img/s", "elapsed"}), width
                assert table.max_scroll_x == 0, width
                table.focus()
                await pilot.press("home")  # the two-line row is one row for the cursor and its details
                await pilot.pause()
                assert "stop requested" in str(app.query_one("#run-details").render())
                # The stop ends: one line a row again, every column back (no ETA now: maybe one more).
                rd.update_status(state="stopped", ended_t=FIXED_NOW + 30, exit_code=0)
                await until(pilot, lambda: not stop_cells(table) and "stopped" in "\n".join(screen_rows(table)),
                            what="stopped")
                assert header_columns(table) >= running
                assert all(table.rows[k].height == 1 for k in table.rows)
    try:
        body()
    finally:
        os.close(lock)


def test_the_runs_table_follows_a_real_escalation_to_its_end(tmp_path, fake_env, monkeypatch):
    """A trainer that ignores both the stop request and SIGTERM: the cell counts down to SIGTERM, then to
    SIGKILL, and the ended run names the signals under the table."""
    monkeypatch.setenv("TUNELAB_FAKE_STEP_S", "0.2")
    monkeypatch.setenv("TUNELAB_FAKE_IGNORE_STOP", "1")
    monkeypatch.setenv("TUNELAB_FAKE_IGNORE_SIGTERM", "1")
    monkeypatch.setenv("TUNELAB_STOP_TIMEOUT_S", "2")
    monkeypatch.setenv("TUNELAB_STOP_KILL_GRACE_S", "2")
    project = make_project(tmp_path, "[train]\nepochs = 50\n")
    rd = start_fake_run(project, fake_env)

    @sync
    async def body():
        app = PaneApp(project, poll=0.1)
        async with app.run_test(size=(160, 20)) as pilot:
            await until(pilot, lambda: table_state(app).get(rd.run_id) == "running", what="running")
            app.query_one(DataTable).focus()
            await pilot.press("s")
            seen = set()

            def watch():
                state = table_state(app).get(rd.run_id, "")
                seen.add(state.split(" in ")[0])
                return state in ("stopped", "failed")
            await until(pilot, watch, timeout=30, what="ended")
            assert {"stopping · TERM", "stopping · KILL"} <= seen, seen
            await pilot.pause(0.3)
            assert "supervisor sent: SIGTERM at " in str(app.query_one("#run-details").render())
            assert ", SIGKILL at " in str(app.query_one("#run-details").render())
    body()


def test_a_force_stopped_run_says_how_it_stopped_not_error(tmp_path):
    """A force stop ends `stopped` with the supervisor's note "stopped on request (killed by signal 15
    (SIGTERM))": the details, the monitor and `tunelab status RUN` give it as part of the stop (it was
    under a red `error:`, for a stop the user asked for); a failed run's error stays an error."""
    import subprocess
    import sys

    from engine.runinfo import summarize
    from tui.screens.monitor import notes
    from tui.widgets.runs_pane import details_text

    project = make_project(tmp_path)
    rd = write_run(project, "20260101-000000-lora", state="stopped", epochs=120, steps=720, done_epochs=30)
    note = "stopped on request (killed by signal 15 (SIGTERM))"
    rd.update_status(stop_reason="request", error=note)
    s = summarize(rd)
    assert [(label, text) for label, text, _ in notes(s)] == [("stopped:", f"stop requested; {note}")]
    details = str(details_text(s))
    assert f"stopped: stop requested; {note}" in details and "error:" not in details
    out = subprocess.run([sys.executable, "-m", "tui.cli", "status", str(rd.path)], capture_output=True,
                         text=True, timeout=60).stdout
    assert f"stopped:     stop requested; {note}" in out and "error:" not in out
    failed = write_run(project, "20260102-000000-lora", state="failed", epochs=120, steps=720, done_epochs=3)
    failed.update_status(error="killed by signal 9 (SIGKILL)")
    assert ("error:", "killed by signal 9 (SIGKILL)") in [(a, b) for a, b, _ in notes(summarize(failed))]
