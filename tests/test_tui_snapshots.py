"""SVG snapshots of each screen (pytest-textual-snapshot). Regenerate with `pytest --snapshot-update`.

Deterministic by construction: a project drawn in code with fixed mtimes, a relative projects
folder, no file watcher, no animations or cursor blink, and half-block images (no terminal probing).
"""
from __future__ import annotations

import pytest

from tests.test_tui_support import make_project, set_times, wait_for
from tui.app import make_app

SIZE = (120, 36)


@pytest.fixture
def app(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pets = make_project(tmp_path / "projects", "pets")
    with open(pets / "configs/lora.toml", "a") as f:  # trains at 32 px: only the 16x16 image is too small
        f.write("\n[data]\nresolution = 32\n")
    set_times(pets)
    make_project(tmp_path / "projects", "birds")
    return make_app("projects", images="halfblock", watch=False, animations=False)


async def home_ready(pilot):
    home = pilot.app.screen
    await wait_for(pilot, lambda: home.summaries and all(s.images != "…" for s in home.summaries.values()))


async def dataset_ready(pilot, row: int = 1):
    await home_ready(pilot)
    await pilot.press("down", "enter")  # pets (birds sorts first)
    await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == "ProjectScreen")
    pane = pilot.app.screen.query_one("DatasetPane")
    await wait_for(pilot, lambda: pane.dataset is not None)
    pane.table.cursor = row
    preview = pane.query_one("ImagePreview")
    await wait_for(pilot, lambda: preview.last is not None and preview.last.source == pane.table.current.path)
    return pane


def test_home(app, snap_compare):
    assert snap_compare(app, terminal_size=SIZE, run_before=home_ready)


def test_dataset_with_preview_and_editor(app, snap_compare):
    assert snap_compare(app, terminal_size=SIZE, run_before=dataset_ready)


def test_dataset_broken_image_placeholder(app, snap_compare):
    async def run_before(pilot):
        await dataset_ready(pilot, row=0)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_configs_with_inline_problems(app, snap_compare):
    async def run_before(pilot):
        await dataset_ready(pilot)
        await pilot.press("2")
        pane = pilot.app.screen.query_one("ConfigsPane")
        await wait_for(pilot, lambda: bool(pane.statuses))

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_help(app, snap_compare):
    async def run_before(pilot):
        await home_ready(pilot)
        await pilot.press("f1")
        await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == "HelpScreen")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_bulk_dialog_preview(app, snap_compare):
    async def run_before(pilot):
        await dataset_ready(pilot)
        await pilot.press("b")
        await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == "BulkDialog")
        dialog = pilot.app.screen
        dialog.query_one("#bulk-op").value = "replace"
        dialog.query_one("#bulk-text").value = "a photo of"
        dialog.query_one("#bulk-replacement").value = "a picture of"
        await wait_for(pilot, lambda: dialog.plan is not None and "replace" in dialog.plan.operation)
        dialog.query_one("#bulk-op").focus()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_caption_conflict_dialog(app, snap_compare):
    async def run_before(pilot):
        pane = await dataset_ready(pilot)
        pane.editor.text_area.insert("my edit, ")
        path = pane.editor.path
        path.write_text("their edit, a photo of a ginger cat")
        pane.files_changed({path})
        await wait_for(pilot, lambda: type(pilot.app.screen).__name__ == "ConflictScreen")

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_dataset_templated_caption_is_read_only(app, snap_compare, tmp_path):
    with open(tmp_path / "projects/pets/project.toml", "a") as f:
        f.write('\n[[concepts]]\nfolder = "images"\ncaption = "template"\ntemplate = "a {kind} called {name}"\n')
    set_times(tmp_path / "projects/pets")
    assert snap_compare(app, terminal_size=SIZE, run_before=dataset_ready)
