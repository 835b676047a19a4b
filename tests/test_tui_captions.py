"""Caption editing in the Dataset tab: saving, moving on, and changes made on disk meanwhile."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_tui_support import make_project, sync, wait_for
from tui.app import make_app


async def open_dataset(pilot, app):
    await wait_for(pilot, lambda: type(app.screen).__name__ == "HomeScreen" and app.screen.summaries)
    await pilot.press("enter")
    await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
    pane = app.screen.query_one("DatasetPane")
    await wait_for(pilot, lambda: pane.dataset is not None)
    return pane


async def select(pilot, pane, rel: str):
    table = pane.table
    index = next(i for i, it in enumerate(table.items) if it.rel == rel)
    table.cursor = index
    await wait_for(pilot, lambda: pane.editor.item is not None and pane.editor.item.rel == rel)
    return pane.editor


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_project(tmp_path / "projects")


def app_for(project: Path):
    return make_app(project.parent, images="none", watch=False, animations=False)


@sync
async def test_ctrl_s_saves_the_edited_caption_to_disk(project):
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        editor = await select(pilot, pane, "images/cat_01.png")
        await pilot.press("e", "end", *", orange")
        assert editor.dirty
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert (project / "images/cat_01.txt").read_text() == "a photo of a ginger cat, sitting, orange"
        assert not editor.dirty
        # the list shows what training will read
        assert pane.table.current.caption == "a photo of a ginger cat, sitting, orange"


@sync
async def test_moving_to_the_next_image_saves_and_keeps_editing(project):
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        editor = await select(pilot, pane, "images/dog_01.png")
        await pilot.press("e", *"x ")
        await pilot.press("alt+down")
        await wait_for(pilot, lambda: editor.item.rel == "images/dog_02.png")
        assert (project / "images/dog_01.txt").read_text() == "x a photo of sks dog on a sofa"
        assert editor.text_area.has_focus
        # an image with no caption file: typing and moving back creates one
        await pilot.press(*"a brown dog", "alt+up")
        await wait_for(pilot, lambda: editor.item.rel == "images/dog_01.png")
        assert (project / "images/dog_02.txt").read_text() == "a brown dog"
        assert "no caption" not in pane.dataset.items[[i.rel for i in pane.dataset.items].index("images/dog_02.png")].flags


@sync
async def test_undo_in_the_editor_restores_the_text(project):
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        editor = await select(pilot, pane, "images/tiny.png")
        await pilot.press("e", "end", *" zz")
        assert editor.text == "a tiny picture zz"
        await pilot.press("ctrl+z")
        assert editor.text == "a tiny picture"
        assert not editor.dirty


@sync
async def test_token_count_warns_past_clips_window(project):
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        editor = await select(pilot, pane, "images/tiny.png")
        status = editor.query_one("#caption-status")
        assert "~3/75 tokens" in str(status.render())
        editor.text_area.insert(" word" * 80)
        await pilot.pause()
        assert status.has_class("-over")
        assert "CLIP reads 75" in str(status.render())


@sync
async def test_a_change_on_disk_with_no_edits_reloads_quietly(project):
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        editor = await select(pilot, pane, "images/cat_02.png")
        path = project / "images/cat_02.txt"
        path.write_text("changed elsewhere")
        pane.files_changed({path})
        await pilot.pause()
        assert editor.text == "changed elsewhere"
        assert not editor.dirty and app.screen is not None
        assert type(app.screen).__name__ == "ProjectScreen"  # no dialog
        assert pane.table.current.caption == "changed elsewhere"


async def conflict(pilot, app, project, *, how_detected: str):
    pane = await open_dataset(pilot, app)
    editor = await select(pilot, pane, "images/cat_01.png")
    await pilot.press("e", "end", *" MINE")
    path = project / "images/cat_01.txt"
    path.write_text("a photo of a ginger cat, THEIRS")
    if how_detected == "watcher":
        pane.files_changed({path})
    else:
        await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: type(app.screen).__name__ == "ConflictScreen")
    # nothing written yet, and both versions are on screen
    assert path.read_text() == "a photo of a ginger cat, THEIRS"
    assert editor.text == "a photo of a ginger cat, sitting MINE"
    screen = app.screen
    assert "MINE" in str(screen.query_one("#conflict-mine").render())
    assert "THEIRS" in str(screen.query_one("#conflict-theirs").render())
    return pane, editor, path


@pytest.mark.parametrize("how_detected", ["watcher", "save"])
@sync
async def test_conflict_keep_mine_writes_mine(project, how_detected):
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane, editor, path = await conflict(pilot, app, project, how_detected=how_detected)
        await pilot.press("ctrl+k")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
        assert path.read_text() == "a photo of a ginger cat, sitting MINE"
        assert not editor.dirty


@sync
async def test_conflict_take_theirs_drops_the_edit_only_when_asked(project):
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane, editor, path = await conflict(pilot, app, project, how_detected="watcher")
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
        assert path.read_text() == "a photo of a ginger cat, THEIRS"
        assert editor.text == "a photo of a ginger cat, THEIRS"
        assert not editor.dirty
        # and the dropped edit is one ctrl+z away
        editor.text_area.focus()
        await pilot.press("ctrl+z")
        assert editor.text == "a photo of a ginger cat, sitting MINE"


@sync
async def test_conflict_merge_by_editing_writes_the_merge(project):
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane, editor, path = await conflict(pilot, app, project, how_detected="save")
        merge = app.screen.query_one("#conflict-merge")
        assert merge.text == "a photo of a ginger cat, sitting MINE, THEIRS"
        merge.focus()
        await pilot.press("end", *" ok")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
        assert path.read_text() == "a photo of a ginger cat, sitting MINE, THEIRS ok"
        assert editor.text == "a photo of a ginger cat, sitting MINE, THEIRS ok"


@sync
async def test_conflict_decide_later_keeps_both_versions(project):
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane, editor, path = await conflict(pilot, app, project, how_detected="watcher")
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
        assert path.read_text() == "a photo of a ginger cat, THEIRS"
        assert editor.text == "a photo of a ginger cat, sitting MINE"
        assert editor.dirty and editor.stale
        # moving on asks again instead of overwriting, and the edit is still there
        await pilot.press("alt+down")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ConflictScreen")
        assert path.read_text() == "a photo of a ginger cat, THEIRS"
        await pilot.press("ctrl+k")
        await wait_for(pilot, lambda: editor.item.rel == "images/cat_02.png")
        assert path.read_text() == "a photo of a ginger cat, sitting MINE"


@sync
async def test_the_watcher_delivers_outside_changes(project):
    app = make_app(project.parent, images="none", watch=True, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        editor = await select(pilot, pane, "images/cat_02.png")
        (project / "images/cat_02.txt").write_text("written by another program")
        await wait_for(pilot, lambda: editor.text == "written by another program", timeout=10)


@sync
async def test_a_failed_write_keeps_the_edit_and_says_why(project, monkeypatch):
    import tui.widgets.caption_editor as module

    def refuse(path, text):
        raise OSError(28, "No space left on device")

    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        editor = await select(pilot, pane, "images/tiny.png")
        editor.text_area.insert("big ")
        monkeypatch.setattr(module, "write_caption", refuse)
        await pilot.press("e", "ctrl+s")
        await pilot.pause()
        assert editor.dirty and editor.text == "big a tiny picture"
        assert (project / "images/tiny.txt").read_text() == "a tiny picture"
        assert any("No space left on device" in str(n.message) for n in app._notifications)
