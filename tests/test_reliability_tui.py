"""The TUI in a hostile terminal: shrunk to 20x10 and back, with no colour, on every screen; it keeps
answering keys and raises nothing."""
from __future__ import annotations

import pytest
from textual.widgets import TabbedContent

from tests.test_tui_runs import write_run
from tests.test_tui_support import make_project, sync
from tests.test_tui_support import wait_for as wait_for_app
from tui.app import make_app

pytestmark = pytest.mark.timeout(180)


def screen_name(app) -> str:
    return type(app.screen).__name__


async def wait_for(pilot, condition) -> None:
    """Wait on the condition, with room for a machine loaded by other tests (CI runs `-n 2` on 2 cores):
    a condition that holds costs nothing, so the timeout is only a backstop."""
    await wait_for_app(pilot, condition, timeout=60)


@sync
async def test_a_20x10_terminal_without_colour_and_back_keeps_every_screen_working(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("TUNELAB_NO_GPU", "1")
    project = make_project(tmp_path / "projects")
    run = write_run(project, "20260101-000000-lora", state="finished", samples=True)
    app = make_app(tmp_path / "projects", images="halfblock", watch=False, animations=False)
    assert app.no_color
    async with app.run_test(size=(20, 10)) as pilot:
        await wait_for(pilot, lambda: screen_name(app) == "HomeScreen" and app.screen.summaries)
        await pilot.press("enter")
        await wait_for(pilot, lambda: screen_name(app) == "ProjectScreen")
        tabs = app.screen.query_one(TabbedContent)
        for key, tab in (("2", "configs"), ("3", "runs"), ("4", "compare"), ("1", "dataset")):
            await pilot.press(key)
            await wait_for(pilot, lambda: tabs.active == tab)
        pane = app.screen.query_one("DatasetPane")
        await wait_for(pilot, lambda: pane.dataset is not None)
        table = pane.table
        await wait_for(pilot, lambda: app.focused is table)  # the tab switch put the keys on the table
        start = table.cursor
        await pilot.press("down", "down")
        await wait_for(pilot, lambda: table.cursor == start + 2)  # still answering keys at 20x10

        await pilot.resize_terminal(120, 40)
        await pilot.pause()
        await pilot.press("3")
        await wait_for(pilot, lambda: tabs.active == "runs")
        runs_table = app.screen.query_one("#runs-table")
        await wait_for(pilot, lambda: runs_table.row_count == 1 and app.focused is runs_table)
        await pilot.press("enter")  # the run's monitor: log, loss plot, numbers
        await wait_for(pilot, lambda: screen_name(app) == "MonitorScreen")
        await pilot.resize_terminal(20, 10)
        await wait_for(pilot, lambda: app.screen.size == (20, 10))  # laid out (and drawn) at 20x10
        await pilot.resize_terminal(120, 40)
        await wait_for(pilot, lambda: app.screen.size == (120, 40))
        await pilot.press("escape")
        await wait_for(pilot, lambda: screen_name(app) == "ProjectScreen")

        await pilot.resize_terminal(20, 10)
        await pilot.press("f1")  # the help screen, squeezed
        await wait_for(pilot, lambda: screen_name(app) == "HelpScreen")
        await pilot.press("escape")
        await wait_for(pilot, lambda: screen_name(app) == "ProjectScreen")
        await pilot.resize_terminal(1, 1)  # absurdly small, for a moment
        await wait_for(pilot, lambda: app.screen.size == (1, 1))
        await pilot.resize_terminal(120, 40)
        await pilot.press("4")
        await wait_for(pilot, lambda: tabs.active == "compare")
        assert app.size == (120, 40) and run.path.exists()
    assert app.return_code in (None, 0)
