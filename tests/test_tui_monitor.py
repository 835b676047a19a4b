"""The monitor screen: log, curves, stats and control requests, all from the run directory."""
from __future__ import annotations

import pytest
from textual.app import App

from engine.rundir import RunDir
from tests.fake_trainer import make_project
from tests.test_tui_runs import FIXED_NOW, sync, until, write_run
from tui.screens.monitor import MonitorScreen
from tui.widgets.gpu_panel import GpuPanel
from tui.widgets.log_view import LogView
from tui.widgets.loss_plot import LossPlot, TrainingHistory

pytestmark = pytest.mark.timeout(60)


class MonitorApp(App):
    def __init__(self, run: RunDir):
        super().__init__()
        self.run_dir = run
        self.clock = lambda: FIXED_NOW

    def on_mount(self) -> None:
        self.push_screen(MonitorScreen(self.run_dir, poll=0.2, log_poll=0.05))


def test_history_folds_progress_val_loss_and_checkpoints_and_a_resume_rewinds_the_curve():
    h = TrainingHistory()
    h.absorb([{"kind": "progress", "step": s, "loss": 1.0 / s, "lr": 1e-4, "img_s": 2.0} for s in range(1, 6)])
    h.absorb([{"kind": "val_loss", "step": 5, "loss": 0.3}, {"kind": "checkpoint", "step": 4, "epoch": 1}])
    assert h.steps == [1, 2, 3, 4, 5] and h.val_steps == [5] and h.checkpoints == [4]
    assert h.smoothed[0] == 1.0 and h.smoothed[-1] > h.loss[-1]  # the EMA lags a falling loss
    h.absorb([{"kind": "progress", "step": 5, "loss": 0.25}])  # resumed from step 4
    assert h.steps == [1, 2, 3, 4, 5] and h.loss[-1] == 0.25


def test_checkpoint_marks_sit_on_the_smoothed_curve_even_between_logged_steps():
    from tui.widgets.loss_plot import checkpoint_marks, step_ticks

    h = TrainingHistory()
    h.absorb([{"kind": "progress", "step": s, "loss": v} for s, v in ((10, 1.0), (20, 1.0), (30, 0.0))])
    # Saves at the end of an epoch (step 6, 25) rarely fall on a logged step; one after the last is not drawn.
    h.absorb([{"kind": "checkpoint", "step": s} for s in (6, 25, 40)])
    marks = checkpoint_marks(h)
    assert [m[0] for m in marks] == [6, 25]
    assert marks[0][1] == h.smoothed[0]
    assert marks[1][1] == (h.smoothed[1] + h.smoothed[2]) / 2
    assert step_ticks([6, 30]) == [6, 12, 18, 24, 30] and step_ticks([1, 3]) == [1, 2, 3]


@sync
async def test_the_numbers_fit_a_100_column_terminal_in_a_few_lines_and_one_line_at_200(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_NO_GPU", "1")
    project = make_project(tmp_path)
    run = write_run(project, "20260101-000000-x", state="finished")
    for size, lines in (((100, 30), 3), ((200, 50), 1)):
        app = MonitorApp(run)
        async with app.run_test(size=size) as pilot:
            screen = app.screen
            await until(pilot, lambda: screen.summary is not None and len(screen.history.steps) == 12)
            await pilot.pause()
            stats = screen.query_one("#monitor-stats")
            shown = ["".join(seg.text for seg in stats.render_line(y)).strip() for y in range(stats.size.height)]
            assert 1 <= len(shown) <= lines, shown
            text = "  ".join(shown)
            for pair in ("epoch 3/3", "step 12/12", "val loss 0.1100", "cost $1.00 ($0.02/epoch)",
                         "checkpoints 3 (last epoch 3)"):
                assert pair in text, (size, pair, shown)
            # The plot gets the rest of the side column: most of the screen's height.
            assert screen.query_one(LossPlot).size.height >= size[1] - 10


@sync
async def test_monitor_shows_stats_plot_and_gpu_fallback_and_writes_requests(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_NO_GPU", "1")
    project = make_project(tmp_path)
    run = write_run(project, "20260101-000000-x", state="finished")
    app = MonitorApp(run)
    async with app.run_test(size=(140, 45)) as pilot:
        screen = app.screen
        assert isinstance(screen, MonitorScreen)
        await until(pilot, lambda: screen.summary is not None and len(screen.history.steps) == 12)
        stats = str(screen.query_one("#monitor-stats").render())
        assert "3/3" in stats and "$1.00" in stats and "($0.02/epoch)" in stats
        assert "no NVIDIA GPU" in str(screen.query_one(GpuPanel).render())
        assert screen.history.checkpoints == [4, 8, 12] and len(screen.history.val_loss) == 3
        await until(pilot, lambda: screen.query_one(LogView).index.line_count == 39)
        plot = screen.query_one(LossPlot)
        await pilot.press("l")
        assert plot.log_scale
        await pilot.press("p")
        assert plot.metric == "lr"
        # A finished run reads no requests: none is written.
        await pilot.press("i")
        assert not (run.control_dir / "sample-now").exists()
        # A live run (status running, lock held by us standing in for the supervisor) gets them.
        import fcntl, os
        run.update_status(state="running")
        fd = os.open(run.lock_path, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            await pilot.press("i", "w", "x")
            assert {p.name for p in run.control_dir.iterdir()} >= {"sample-now", "save-now", "stop"}
        finally:
            os.close(fd)
        await pilot.press("escape")
        assert not isinstance(app.screen, MonitorScreen)


def test_snapshot_monitor(tmp_path, snap_compare, monkeypatch):
    monkeypatch.setenv("TUNELAB_NO_GPU", "1")
    project = make_project(tmp_path)
    run = write_run(project, "20260101-000000-x", state="finished")
    app = MonitorApp(run)

    async def loaded(pilot):
        screen = app.screen
        await until(pilot, lambda: screen.summary is not None and len(screen.history.steps) == 12
                    and screen.query_one(LogView).index.line_count == 39)
        await pilot.pause(0.7)  # the plot redraw is throttled

    assert snap_compare(app, terminal_size=(140, 40), run_before=loaded)


class FakeNvml:
    """Stands in for pynvml: two boards, the second without power readings."""

    class _Util:
        gpu = 87

    class _Mem:
        used, total = 30 * 2**30, 80 * 2**30

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return b"NVIDIA H100"

    def nvmlDeviceGetUtilizationRates(self, h):
        return self._Util()

    def nvmlDeviceGetMemoryInfo(self, h):
        return self._Mem()

    def nvmlDeviceGetTemperature(self, h, sensor):
        return 61

    def nvmlDeviceGetPowerUsage(self, h):
        if h == 1:
            raise RuntimeError("not supported")
        return 350_000

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return 700_000


def test_gpu_probe_reads_every_board_and_tolerates_missing_fields():
    from tui.gpu import GpuProbe

    probe = GpuProbe(FakeNvml())
    assert probe.available
    a, b = probe.read()
    assert (a.name, a.utilization, a.temperature, a.power, a.power_limit) == ("NVIDIA H100", 87, 61, 350.0, 700.0)
    assert b.power is None and b.memory_total == 80 * 2**30
    off = GpuProbe(None)
    assert not off.available and off.read() == [] and off.reason == "no NVIDIA GPU"


@sync
async def test_gpu_panel_shows_readings_per_board():
    from textual.app import App as _App
    from tui.gpu import GpuProbe

    class PanelApp(_App):
        def compose(self):
            yield GpuPanel(GpuProbe(FakeNvml()), interval=10)

    app = PanelApp()
    async with app.run_test(size=(60, 14)) as pilot:
        panel = app.query_one(GpuPanel)
        await until(pilot, lambda: len(panel.readings) == 2)
    from rich.console import Console
    from tui.widgets.gpu_panel import render_readings

    console = Console(width=60, record=True)
    console.print(render_readings(panel.readings))
    text = console.export_text()
    assert "0 NVIDIA H100" in text and "1 NVIDIA H100" in text
    assert "87%" in text and "30.0/80 GiB" in text and "61°C" in text and "350/700 W" in text
    assert "power -" in text  # the second board gives no power reading


@sync
async def test_a_run_stopped_by_its_budget_says_so_with_the_trainers_warning(tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("TUNELAB_NO_GPU", "1")
    project = make_project(tmp_path)
    run = write_run(project, "20260101-000000-x", state="stopped", done_epochs=2)
    run.config_path.write_text(run.config_path.read_text() + "max_hours = 0.5\n")  # [budget] is last
    with run.events_path.open("a") as f:
        for ev in ({"kind": "warning", "message": "budget.max_hours = 0.5 reached after 0.50 h; stopping with "
                    "a checkpoint", "reason": "budget", "budget": 0.5},
                   {"kind": "stopped", "step": 8, "epoch": 2, "reason": "budget"}):
            f.write(json.dumps({"t": FIXED_NOW - 100, **ev}) + "\n")
    app = MonitorApp(run)
    async with app.run_test(size=(120, 30)) as pilot:
        screen = app.screen
        await until(pilot, lambda: screen.summary is not None and screen.summary.stop_reason == "budget")
        await pilot.pause()
        stats = screen.query_one("#monitor-stats")
        shown = "\n".join("".join(seg.text for seg in stats.render_line(y)) for y in range(stats.size.height))
        assert "stopped: budget.max_hours = 0.5 h reached" in shown and "budget 30m00s" in shown
        assert "warning: budget.max_hours = 0.5 reached after 0.50 h" in shown


def test_a_stopping_run_says_when_the_supervisor_will_end_its_trainer(tmp_path):
    import fcntl
    import os
    import time

    from engine.runinfo import RunWatcher
    from tui.screens.monitor import notes

    project = make_project(tmp_path)
    run = write_run(project, "20260101-000000-x", state="running", done_epochs=1)
    deadline = time.time() + 600
    fd = os.open(run.lock_path, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # standing in for the supervisor: a stopping run, not a lost one
    try:
        running = RunWatcher(run).refresh(time.time())
        run.update_status(state="stopping", stop_reason="request", stop_deadline_t=deadline)
        summary = RunWatcher(run).refresh(time.time())
    finally:
        os.close(fd)
    assert summary.state == "stopping"
    # A run on its way out has no time to go: the ETA of the schedule it is leaving would tick on.
    assert running.eta_s is not None and summary.eta_s is None
    at = time.strftime("%H:%M:%S", time.localtime(deadline))
    (label, text, _), = [n for n in notes(summary) if n[0] == "stopping:"]
    assert text.startswith("stop requested") and f"has not exited by {at}, the supervisor ends it" in text


@sync
async def test_once_sigterm_is_sent_the_monitor_says_so_and_counts_down_to_sigkill(tmp_path, monkeypatch):
    import os
    import time

    monkeypatch.setenv("TUNELAB_NO_GPU", "1")
    project = make_project(tmp_path)
    run = write_run(project, "20260101-000000-x", state="running", epochs=120, steps=720, done_epochs=30)
    run.update_status(state="stopping", stop_reason="request", stop_requested_t=FIXED_NOW - 620,
                      stop_deadline_t=FIXED_NOW - 20, stop_kill_after_s=60,
                      stop_escalation=[{"signal": "SIGTERM", "t": FIXED_NOW - 19, "why": "…"}])
    lock = run.take_lock(wait=1)  # standing in for the supervisor
    try:
        app = MonitorApp(run)
        async with app.run_test(size=(120, 30)) as pilot:
            screen = app.screen
            await until(pilot, lambda: screen.summary is not None)
            await pilot.pause()
            head = str(screen.query_one("#monitor-head").render())
            assert "stopping · KILL in 41s" in head
            stats = screen.query_one("#monitor-stats")
            shown = "\n".join("".join(seg.text for seg in stats.render_line(y)) for y in range(stats.size.height))
            term = time.strftime("%H:%M:%S", time.localtime(FIXED_NOW - 19))
            kill = time.strftime("%H:%M:%S", time.localtime(FIXED_NOW + 41))
            assert (f"stopping: stop requested; the supervisor sent SIGTERM at {term}; SIGKILL at {kill} if it "
                    "has not exited") in shown
            assert "the supervisor ends it" not in shown  # the deadline is past: not announced again
    finally:
        os.close(lock)
