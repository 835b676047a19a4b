"""The Compare tab: the contact sheet fills as samples appear; zoom, mark best, export."""
from __future__ import annotations

import json

import pytest
from PIL import Image
from textual.app import App, ComposeResult
from textual.widgets import Footer

from engine.contact_sheet import SheetLayout
from engine.rundir import RunDir
from tests.fake_trainer import make_project
from tests.test_contact_sheet import make_samples
from tests.test_tui_runs import FIXED_NOW, sync, until
from tui.screens.zoom import ZoomScreen
from tui.widgets.compare_pane import ComparePane
from tui.widgets.contact_grid import ContactGrid

pytestmark = pytest.mark.timeout(60)


class CompareApp(App):
    def __init__(self, project, mode="halfblock", poll=0.1):
        super().__init__()
        self.project, self.image_mode, self.poll = project, mode, poll
        self.clock = lambda: FIXED_NOW

    def compose(self) -> ComposeResult:
        yield ComparePane(self.project, poll=self.poll)
        yield Footer()


def filled_cells(app) -> int:
    return sum(1 for p in app.query_one(ContactGrid).visible_cells() if p is not None)


@sync
async def test_the_grid_fills_as_sample_files_appear_and_zooms_marks_and_exports(tmp_path):
    project = make_project(tmp_path)
    run = RunDir(project / "runs" / "20260101-000000-x")
    run.samples_dir.mkdir(parents=True)
    app = CompareApp(project)
    async with app.run_test(size=(120, 50)) as pilot:
        pane = app.query_one(ComparePane)
        grid = app.query_one(ContactGrid)
        await pilot.pause(0.2)
        assert filled_cells(app) == 0
        make_samples(run, columns=((0, 0),), seeds=(42,))
        await until(pilot, lambda: filled_cells(app) == 4, what="epoch 0 column")
        make_samples(run, columns=((0, 0), (1, 10), (2, 20)), seeds=(42,))
        await until(pilot, lambda: filled_cells(app) == 12, what="three columns")
        # Thumbnails arrive from the worker and replace the "…" placeholders.
        await until(pilot, grid.all_loaded, what="thumbnails")

        grid.focus()
        await pilot.press("right", "right", "down")
        assert grid.cursor == (1, 2)
        await pilot.press("enter")
        assert isinstance(app.screen, ZoomScreen)
        await pilot.pause()
        facts = str(app.screen.query_one("#zoom-facts").render())
        assert "sks dog on the beach" in facts and "42" in facts and "7.5" in facts and "25" in facts
        assert "epoch 2 · step 20" in facts
        await pilot.press("left")
        assert "epoch 1 · step 10" in str(app.screen.query_one("#zoom-facts").render())
        await pilot.press("escape")
        assert app.screen is not None and not isinstance(app.screen, ZoomScreen)
        assert grid.cursor == (1, 1)  # zoom moved to epoch 1; the grid follows

        await pilot.press("b")
        best = json.loads(run.best_path.read_text())
        assert best["checkpoint"] == "e0001-s00000010" and best["epoch"] == 1 and best["step"] == 10
        assert best["t"] == FIXED_NOW

        await pilot.press("left", "b")  # epoch 0 is the base model: refused
        assert json.loads(run.best_path.read_text())["checkpoint"] == "e0001-s00000010"

        await pilot.press("e")
        out = run.path / "contact-sheet.png"
        await until(pilot, out.exists, what="export")
        with Image.open(out) as img:
            assert img.size == SheetLayout().size(4, 3, 3)
        assert pane.best == "e0001-s00000010"


def test_snapshot_compare(tmp_path, snap_compare):
    project = make_project(tmp_path)
    run = RunDir(project / "runs" / "20260101-000000-x")
    make_samples(run, columns=((0, 0), (1, 10), (2, 20), (3, 30), (4, 40), (5, 50)), seeds=(42, 7),
                 skip={(5, 3, 7), (5, 0, 7)})
    from engine.contact_sheet import write_best
    write_best(run, "e0002-s00000020", now=FIXED_NOW)
    app = CompareApp(project, poll=0)

    async def loaded(pilot):
        await until(pilot, lambda: filled_cells(app) >= 12 and app.query_one(ContactGrid).all_loaded())
        await pilot.press("right")
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(130, 42), run_before=loaded)
