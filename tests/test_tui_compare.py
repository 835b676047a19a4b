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
        await pilot.press("home")  # the first checkpoint column, then the last, and back
        assert "checkpoint base  (e0000-s00000000)" in str(app.screen.query_one("#zoom-facts").render())
        await pilot.press("end")
        assert "epoch 2 · step 20" in str(app.screen.query_one("#zoom-facts").render())
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


@sync
async def test_export_of_a_run_without_samples_writes_nothing_and_says_why_as_tunelab_grid_does(tmp_path):
    project = make_project(tmp_path)
    run = RunDir(project / "runs" / "20260101-000000-lora")
    run.samples_dir.mkdir(parents=True)
    (run.path / "config.toml").write_text('method = "lora"\n[sample]\nprompts = []\n')
    app = CompareApp(project)
    async with app.run_test(size=(120, 50)) as pilot:
        await until(pilot, lambda: app.query_one(ComparePane).run_id == run.run_id, what="run loaded")
        await pilot.press("e")
        await until(pilot, lambda: any("no sample images" in str(n.message) for n in app._notifications),
                    what="notice")
        notice = next(str(n.message) for n in app._notifications if "no sample images" in str(n.message))
        assert "its config has no sample.prompts" in notice
        assert "tunelab resume 20260101-000000-lora --set 'sample.prompts=[" in notice
        assert notice.endswith("nothing written")
        assert not (run.path / "contact-sheet.png").exists()  # was: an empty PNG and 'written to'


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


@sync
async def test_the_compare_tab_shows_the_run_selected_in_the_runs_tab(tmp_path):
    from textual.widgets import DataTable

    from tui.app import make_app
    from tui.widgets.runs_pane import RunsPane

    project = make_project(tmp_path)
    old, new = (RunDir(project / "runs" / f"2026010{i}-000000-x") for i in (1, 2))
    for run in (old, new):
        make_samples(run, columns=((0, 0), (1, 10)), seeds=(42,))
        run.write_status({"state": "finished", "started_t": FIXED_NOW - 60, "ended_t": FIXED_NOW})
    app = make_app(tmp_path, images="none", watch=False, animations=False)
    async with app.run_test(size=(130, 40)) as pilot:
        await pilot.pause()
        app.open_project(project, "runs")
        await until(pilot, lambda: bool(app.screen.query(RunsPane)), what="project screen")
        table = app.screen.query_one("#runs-table", DataTable)
        await until(pilot, lambda: table.row_count == 2, what="two runs")
        pane = app.screen.query_one(ComparePane)
        await until(pilot, lambda: pane.run_id == new.run_id, what="the newest run by default")
        table.focus()
        await pilot.press("down")  # the older run
        await pilot.press("4")
        await until(pilot, lambda: pane.run_id == old.run_id and pane.sheet is not None
                    and pane.sheet.run_dir.path == old.path, what="the selected run's sheet")
        bar = str(app.screen.query_one("#compare-bar").render())
        assert old.run_id in bar and "(2/2, R: next)" in bar
        # A run chosen here with R stays chosen while the Runs selection does not change.
        await pilot.press("R")
        await until(pilot, lambda: pane.run_id == new.run_id, what="R")
        await pilot.press("3", "4")
        await pilot.pause(0.3)
        assert pane.run_id == new.run_id


def test_snapshot_zoom(tmp_path, snap_compare):
    project = make_project(tmp_path)
    run = RunDir(project / "runs" / "20260101-000000-x")
    make_samples(run, columns=((0, 0), (1, 10), (2, 20)), seeds=(42,), size=64)
    app = CompareApp(project, poll=0)

    async def zoomed(pilot):
        await until(pilot, lambda: filled_cells(app) >= 6 and app.query_one(ContactGrid).all_loaded())
        app.query_one(ContactGrid).focus()
        await pilot.press("right", "down", "enter")
        await until(pilot, lambda: isinstance(app.screen, ZoomScreen)
                    and app.screen.query_one("#zoom-image").display)
        await pilot.pause(0.2)

    assert snap_compare(app, terminal_size=(100, 30), run_before=zoomed)


@sync
async def test_page_down_shows_the_next_prompts_and_page_up_the_first_again(tmp_path):
    project = make_project(tmp_path)
    run = RunDir(project / "runs" / "20260101-000000-x")
    make_samples(run, columns=((0, 0), (1, 10)), seeds=(42,))  # 4 prompts
    app = CompareApp(project, mode="none")
    async with app.run_test(size=(120, 26)) as pilot:  # room for two prompts
        grid = app.query_one(ContactGrid)
        await until(pilot, lambda: filled_cells(app) == 4, what="the first page")
        assert grid.page.rows == 2 and grid.page.row0 == 0
        grid.focus()
        await pilot.press("right", "pagedown")
        assert grid.page.row0 == 2 and grid.cursor == (2, 1)
        wanted = {f"p{grid.sheet.rows[r].index:02d}" for r in (2, 3)}  # the sheet's 3rd and 4th rows
        shown = [p.name for p in grid.visible_cells()]
        assert len(shown) == 4 and {name[:3] for name in shown} == wanted
        await pilot.press("pagedown")  # already the last page: the cursor goes to the last prompt
        assert grid.page.row0 == 2 and grid.cursor == (3, 1)
        await pilot.press("pageup")
        assert grid.page.row0 == 0 and grid.cursor == (1, 1)


@sync
async def test_a_pivotal_runs_column_headers_mark_the_phase(tmp_path):
    from tests.test_contact_sheet import pivotal_events

    project = make_project(tmp_path)
    run = RunDir(project / "runs" / "20260101-000000-piv")
    make_samples(run, columns=((0, 0), (1, 10), (2, 20)), seeds=(42,))
    pivotal_events(run, switch=10)
    app = CompareApp(project)
    async with app.run_test(size=(120, 50)) as pilot:
        grid = app.query_one(ContactGrid)
        await until(pilot, lambda: filled_cells(app) == 12, what="the grid")
        heads = [grid._head_text(c).plain.replace(" ★", "") for c in range(3)]
        assert heads == ["base\nstep 0", "epoch 1\nstep 10 · TI", "epoch 2\nstep 20 · LoRA"]
        on_screen = "".join(seg.text for seg in grid.render_line(1))  # the headers' second line, as drawn
        assert "step 10 · TI" in on_screen and "step 20 · LoRA" in on_screen


def cell_row_text(grid, y: int) -> str:
    return "".join(seg.text for seg in grid.render_line(y))


def test_cells_grow_with_the_room_and_never_shrink_below_the_small_size():
    from tui.widgets.contact_grid import CELL_H, CELL_H_MAX, CELL_W, cell_size

    assert cell_size(100, 30, 4, 3) == (CELL_W, CELL_H)  # a small terminal: as before
    assert cell_size(170, 78, 8, 10) == (CELL_W, CELL_H)  # the benchmark's 8×8 page stays 8×8
    assert cell_size(240, 67, 4, 3) == (30, 15)  # a big terminal, a small sheet: 30×30 px thumbnails
    assert cell_size(240, 67, 30, 40) == (24, 12)  # a big sheet: about 8 checkpoints × 4 prompts
    assert cell_size(600, 200, 1, 1) == (2 * CELL_H_MAX, CELL_H_MAX)  # beyond that, zoom


@sync
async def test_on_a_big_terminal_the_cells_are_bigger_and_paging_cursor_and_zoom_still_work(tmp_path):
    prompts = [{"text": f"prompt {i}", "kind": ("accuracy", "flexibility", "preservation")[i % 3]} for i in range(8)]
    project = make_project(tmp_path)
    run = RunDir(project / "runs" / "20260101-000000-x")
    make_samples(run, columns=((0, 0), (1, 10), (2, 20)), seeds=(42,), prompts=prompts, size=64)
    for size, cell in (((120, 40), (16, 8)), ((240, 70), (30, 15))):
        app = CompareApp(project)
        async with app.run_test(size=size) as pilot:
            grid = app.query_one(ContactGrid)
            await until(pilot, lambda: filled_cells(app) > 0 and grid.all_loaded(), what="the first page")
            assert grid.cell == cell, size
            # The thumbnails are made at the cell's size and drawn across its whole width.
            (path,) = [p for p in grid.visible_cells()[:1]]
            img = grid.thumbs.get(grid.thumbs.key(path, grid.box))
            assert img is not None and img.size == (cell[0], cell[0])
            from tui.widgets.contact_grid import HEADER_H, LABEL_W
            drawn = cell_row_text(grid, HEADER_H + 1)[LABEL_W:LABEL_W + cell[0] + 1]
            assert drawn == "▀" * cell[0] + " "
            if size == (240, 70):
                assert grid.page.rows == 4 and grid.page.cols == 3  # 8 prompts: two pages of four
                grid.focus()
                await pilot.press("right", "down")
                assert grid.cursor == (1, 1)
                mark = cell_row_text(grid, HEADER_H + 2 * (cell[1] + 1) - 1)  # the gap under row 1
                assert "━" * cell[0] in mark[LABEL_W + cell[0] + 1:]
                await pilot.press("pagedown")
                assert grid.page.row0 == 4 and grid.cursor == (5, 1)
                await until(pilot, grid.all_loaded, what="the second page")
                await pilot.press("enter")
                assert isinstance(app.screen, ZoomScreen)
                assert grid.sheet.rows[5].text in str(app.screen.query_one("#zoom-facts").render())


@sync
async def test_cells_a_resume_rendered_later_are_marked_and_the_zoom_says_which_settings_differ(tmp_path):
    """After `tunelab resume --set sample.seeds=[42, 7] sample.steps=40`, seed 7's cells of the earlier
    columns were rendered at 40 steps, their columns' own at 25: the grid marks them (`↻ steps 40` in the
    gap under the cell), the bar counts them, the status line and the zoom say how they differ, and the
    zoom's steps are the cell's own (was: the first column's 25 everywhere)."""
    from tests.test_contact_sheet import resume_adds_seed
    from tui.widgets.contact_grid import HEADER_H, LABEL_W

    project = make_project(tmp_path)
    run = RunDir(project / "runs" / "20260101-000000-x")
    make_samples(run, columns=((0, 0), (1, 10)), seeds=(42,))
    resume_adds_seed(run, ((0, 0), (1, 10)), seed=7, steps=40)
    make_samples(run, columns=((2, 20),), seeds=(42, 7))
    after = run.samples_dir / "e0002-s00000020" / "samples.json"
    after.write_text(json.dumps({**json.loads(after.read_text()), "prompts": [{**p, "steps": 40} for p in
                                                                            json.loads(after.read_text())["prompts"]]}))
    app = CompareApp(project)
    async with app.run_test(size=(120, 50)) as pilot:
        pane = app.query_one(ComparePane)
        grid = app.query_one(ContactGrid)
        await until(pilot, lambda: filled_cells(app) == 12, what="the sheet")
        assert pane.sheet.seed == 7  # the first seed
        bar = str(app.query_one("#compare-bar").render())
        assert "↻ 8 rendered on resume (8 with other settings)" in bar
        gap = cell_row_text(grid, HEADER_H + grid.cell[1])  # the gap under the first row
        cells = [gap[LABEL_W + i * (grid.cell[0] + 1):LABEL_W + (i + 1) * (grid.cell[0] + 1)] for i in range(3)]
        assert cells[0].startswith("━") and cells[0].rstrip().endswith("↻ steps 40")  # the cursor's cell too
        assert cells[1].strip() == "↻ steps 40" and cells[2].strip() == ""  # epoch 2: rendered with its column
        status = str(app.query_one("#compare-status").render())
        assert status.startswith("↻ rendered on resume, with steps 40 (column: 25)")
        grid.focus()
        await pilot.press("right", "enter")
        assert isinstance(app.screen, ZoomScreen)
        facts = str(app.screen.query_one("#zoom-facts").render())
        assert "↻ later" in facts and "with steps 40 (column: 25)" in facts
        assert "steps      40 (dpm++)" in facts and "size       16×16" in facts
        await pilot.press("right")  # epoch 2, after the resume: 40 steps, rendered with its column
        facts = str(app.screen.query_one("#zoom-facts").render())
        assert "↻ later" not in facts and "steps      40" in facts
        await pilot.press("escape")
        await pilot.press("s")  # seed 42: every cell rendered with its column, no mark
        await until(pilot, lambda: pane.sheet.seed == 42, what="seed 42")
        await pilot.pause(0.2)
        assert "↻" not in str(app.query_one("#compare-bar").render())
        assert "↻" not in cell_row_text(grid, HEADER_H + grid.cell[1])
        await pilot.press("enter")
        facts = str(app.screen.query_one("#zoom-facts").render())
        assert "steps      40" in facts and "↻" not in facts  # epoch 2's own steps, not the base column's 25
