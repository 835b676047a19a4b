"""End to end with the real engine: launch a run from the TUI, watch it progress, see the sheet fill.

Everything here is real: the whole app, `tunelab check`, the detached supervisor, `accelerate launch`
of the trainer on the tiny model, and the Runs and Compare panes reading the run directory.
"""
from __future__ import annotations

import pytest
from textual.widgets import DataTable

from engine.config import dump_config
from engine.rundir import list_runs
from tests.fake_trainer import kill_run_processes, wait_state
from tests.test_tui_runs import sync, until
from tests.train_fixtures import make_project, tiny_config
from tui.app import make_app
from tui.widgets.contact_grid import ContactGrid
from tui.widgets.runs_pane import RunsPane

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def test_launch_from_the_tui_shows_progress_and_fills_the_contact_sheet(tmp_path, monkeypatch, tiny_base):
    monkeypatch.setenv("TUNELAB_NO_GPU", "1")
    monkeypatch.delenv("TUNELAB_NO_ACCELERATE", raising=False)
    monkeypatch.delenv("TUNELAB_TRAINER_MODULE", raising=False)
    project = make_project(tmp_path, n=4)  # goals: one accuracy, one preservation prompt
    cfg = tiny_config(**{"train.epochs": 3, "train.batch_size": 1})  # 4 steps an epoch
    cfg.save.every_n_epochs = 1
    (project / "configs").mkdir()
    (project / "configs" / "tiny.toml").write_text(dump_config(cfg))

    @sync
    async def body():
        app = make_app(tmp_path, images="halfblock", watch=False, animations=False)
        async with app.run_test(size=(160, 40)) as pilot:
            await pilot.pause()
            app.open_project(project, "runs")
            await until(pilot, lambda: bool(app.screen.query(RunsPane)), what="project screen")
            await pilot.pause(0.3)
            table = app.screen.query_one("#runs-table", DataTable)
            table.focus()
            await pilot.press("n")
            await pilot.pause(0.3)
            await pilot.press("enter")  # the only config
            await until(pilot, lambda: bool(list_runs(project)), timeout=60, what="a run dir")
            (run,) = list_runs(project)
            try:
                epochs_seen: set[str] = set()

                def progressed():
                    if run.run_id in {str(k.value) for k in table.rows}:
                        epochs_seen.add(str(table.get_cell(run.run_id, "epoch")))
                    return bool(epochs_seen & {"1/3", "2/3", "3/3"})

                await until(pilot, progressed, timeout=180, what="live progress in the runs table")

                await pilot.press("4")  # Compare
                grid = app.screen.query_one(ContactGrid)

                def filled() -> int:
                    return sum(1 for c in grid.visible_cells() if c is not None)

                # 2 goal prompts × (epoch 0 + 3 checkpoints), one seed
                await until(pilot, lambda: filled() == 8, timeout=180, what="the contact sheet to fill")
                await until(pilot, grid.all_loaded, timeout=30, what="thumbnails")
                await pilot.press("3")  # back to Runs: the finished run shows as such
                await until(pilot, lambda: str(table.get_cell(run.run_id, "state")) == "finished",
                            timeout=60, what="finished")
            finally:
                kill_run_processes(run)
        wait_state(run, "finished", timeout=5)
        assert len(list((run.path / "checkpoints").glob("*/COMPLETE"))) == 3

    body()
