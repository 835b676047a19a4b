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
        # 3 words + CLIP's start and end tokens, against CLIP's 77-token window
        assert "~5/77 tokens" in str(status.render()) and not status.has_class("-over")
        area = editor.text_area
        area.insert(" word" * 71, area.document.end)  # 74 words + 2: still inside
        await pilot.pause()
        assert "~76/77 tokens" in str(status.render()) and not status.has_class("-over")
        area.insert(" one more", area.document.end)  # 76 + 2: over
        await pilot.pause()
        assert status.has_class("-over")
        assert "~78/77 tokens — over: CLIP cuts the rest" in str(status.render())


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


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
@sync
async def test_every_conflict_button_is_whole_on_screen_at_80_columns_too(project, size):
    app = app_for(project)
    async with app.run_test(size=size) as pilot:
        pane = await open_dataset(pilot, app)
        editor = await select(pilot, pane, "images/cat_01.png")
        editor.text_area.insert("MINE, ")
        path = project / "images/cat_01.txt"
        path.write_text("a photo of a ginger cat, THEIRS")
        pane.files_changed({path})
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ConflictScreen")
        box = app.screen.query_one("ConflictScreen > Vertical")
        for button in app.screen.query("Button"):
            label = str(button.label)
            assert box.content_region.contains_region(button.region), f"{label!r} cut off at {size}"
            assert button.content_region.width >= len(label), label


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


def use_template(project: Path) -> None:
    with open(project / "project.toml", "a") as f:
        f.write('\n[[concepts]]\nfolder = "images"\ncaption = "template"\ntemplate = "a {kind} called {name}"\n')


@sync
async def test_a_templated_caption_is_shown_read_only_with_where_it_comes_from(project):
    use_template(project)
    sidecar = project / "images/cat_01.txt"
    before = sidecar.read_text()
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        editor = await select(pilot, pane, "images/cat_01.png")
        # the editor shows what training reads — the same as the list — not the unused sidecar
        assert pane.table.current.caption == "a cat called cat 1"
        assert editor.text == "a cat called cat 1" and editor.readonly and editor.text_area.read_only
        title = str(editor.query_one("#caption-title").render())
        note = str(editor.query_one("#caption-note").render())
        assert "read-only: from the metadata template" in title
        assert "the template 'a {kind} called {name}'" in note and 'caption = "sidecar"' in note
        assert "from project.toml" in str(editor.query_one("#caption-status").render())
        # typing does nothing, saving writes nothing and says why
        await pilot.press("e", *"xyz", "ctrl+s")
        await pilot.pause()
        assert editor.text == "a cat called cat 1" and not editor.dirty
        assert sidecar.read_text() == before
        assert any("Nothing to save" in str(n.message) for n in app._notifications)
        # moving on works as usual; an image with no sidecar shows its templated caption too
        await pilot.press("alt+down", "alt+down", "alt+down")
        await wait_for(pilot, lambda: editor.item.rel == "images/dog_02.png")
        assert editor.text == "a dog called dog 2" and not (project / "images/dog_02.txt").exists()


@sync
async def test_a_sidecar_concept_with_a_trigger_counts_the_tokens_training_reads(project):
    with open(project / "project.toml", "a") as f:
        f.write('\n[[concepts]]\nfolder = "images"\ntrigger = "sks"\n')
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        editor = await select(pilot, pane, "images/tiny.png")
        assert editor.text == "a tiny picture" and not editor.readonly  # the file, without the trigger
        assert "~7/77 tokens" in str(editor.query_one("#caption-status").render())  # sks , a tiny picture + 2
        assert "trigger 'sks'" in str(editor.query_one("#caption-note").render())


@sync
async def test_keys_arriving_together_after_e_go_to_the_editor(project):
    # Over a slow link `e` and the next keys arrive in one read; they must not go to the list.
    from textual import events

    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        editor = await select(pilot, pane, "images/cat_01.png")
        pane.table.focus()
        await pilot.pause()
        for key, char in (("e", "e"), ("end", None)):  # queued before either is handled
            event = events.Key(key, char)
            event.set_sender(app)
            app._driver.send_message(event)
        await pilot.pause()
        await pilot.pause()
        assert pane.table.current.rel == "images/cat_01.png"  # `end` did not jump the list to the last image
        assert editor.text_area.has_focus and editor.text_area.cursor_location == (0, 32)  # it went to the editor


def test_the_merge_suggestion_is_three_way_over_comma_separated_parts():
    from tui.screens.conflict import merge_start

    base = "a photo of a ginger cat, sitting, indoors"
    mine = "a photo of a ginger cat, sitting, indoors, sks"          # I added a trigger
    theirs = "a photo of a ginger cat, lying, indoors"               # they changed sitting → lying
    assert merge_start(mine, theirs, base) == "a photo of a ginger cat, indoors, sks, lying"
    # without a base: mine, then what theirs has that mine lacks
    assert merge_start(mine, theirs) == "a photo of a ginger cat, sitting, indoors, sks, lying"
    assert merge_start(mine, None, base) == mine and merge_start("", theirs, base) == theirs


@sync
async def test_brackets_in_file_names_and_captions_are_shown_as_text(project):
    # Rich/Textual markup in a name ("[b]", "[/]") must neither vanish nor crash the app
    (project / "images/cat_01.png").rename(project / "images/cat [b].png")
    (project / "images/cat_01.txt").rename(project / "images/cat [b].txt")
    (project / "images/cat [b].txt").write_text("a cat [/] with [b]brackets[/b]")
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        editor = await select(pilot, pane, "images/cat [b].png")
        assert "cat [b].txt" in str(editor.query_one("#caption-title").render())
        assert "images/cat [b].png" in str(pane.query_one("#preview-facts").render())
        await pilot.press("e", "end", *" MINE")
        path = project / "images/cat [b].txt"
        path.write_text("theirs [/]")
        pane.files_changed({path})
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ConflictScreen")
        assert "cat [b].txt changed on disk" in str(app.screen.query_one("#conflict-title").render())
        await pilot.press("ctrl+k")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
        assert path.read_text() == "a cat [/] with [b]brackets[/b] MINE"


@sync
async def test_the_token_count_is_exact_with_the_base_models_tokenizer(project, tiny_base, monkeypatch):
    from engine.tokencount import load_counter

    monkeypatch.setenv("TUNELAB_CAPTION_TOKENS", "exact")
    counter = load_counter(tiny_base / "tokenizer")  # configs/lora.toml trains on the tiny base
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        editor = await select(pilot, pane, "images/cat_01.png")
        status = editor.query_one("#caption-status")
        await wait_for(pilot, lambda: editor.counter is not None)
        exact = counter(["a photo of a ginger cat, sitting"])[0]
        assert f"{exact + 2}/77 tokens · saved" in str(status.render()) and "~" not in str(status.render())
        area = editor.text_area
        long = " supercalifragilistic" * 20
        area.insert(long, area.document.end)
        await pilot.pause()
        n = counter(["a photo of a ginger cat, sitting" + long])[0]
        assert n > 75 and f"{n + 2}/77 tokens — over: CLIP cuts the rest" in str(status.render())


@sync
async def test_without_a_tokenizer_on_disk_the_count_stays_an_estimate(project, monkeypatch):
    monkeypatch.setenv("TUNELAB_CAPTION_TOKENS", "exact")
    monkeypatch.setenv("TUNELAB_CACHE", str(project.parent / "no-tiny-built"))  # the tiny base is not built
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        editor = await select(pilot, pane, "images/tiny.png")
        await app.workers.wait_for_complete()  # the look for a tokenizer has ended
        assert editor._counter_asked > 0 and editor.counter is None and "~5/77 tokens" in str(editor.query_one("#caption-status").render())


def type_burst(app, keys) -> None:
    """Keys arriving in one read from the terminal (a fast typist, a paste, a slow SSH link): all queued
    before the app handles the first, unlike `pilot.press`, which waits for each key to be handled."""
    from textual import events

    for key in keys:
        app.post_message(events.Key(key, {"slash": "/", "enter": "\r"}.get(key, key if len(key) == 1 else None)))


@sync
async def test_keys_typed_in_the_same_burst_as_e_or_enter_go_into_the_editor(project):
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        editor = await select(pilot, pane, "images/cat_01.png")
        type_burst(app, ["e", *"xy "])
        await wait_for(pilot, lambda: editor.text.startswith("xy"))
        assert editor.item.rel == "images/cat_01.png" and editor.text == "xy a photo of a ginger cat, sitting"
        await pilot.press("escape")
        await wait_for(pilot, lambda: pane.table.has_focus)
        editor = await select(pilot, pane, "images/cat_02.png")
        # enter, then end: `end` reaches the editor (its cursor), it does not jump the list to the last image
        type_burst(app, ["enter", "end", *"zz"])
        await wait_for(pilot, lambda: "zz" in editor.text)
        assert editor.item.rel == "images/cat_02.png" and pane.table.current.rel == "images/cat_02.png"
        await pilot.press("escape")
        await wait_for(pilot, lambda: pane.table.has_focus)
        # `/` then words: the filter gets all of them
        type_burst(app, ["slash", *"dog"])
        await wait_for(pilot, lambda: pane.query_one("#dataset-filter").value == "dog")
        # in the filter and in the editor, e, enter and / are typed, not bindings
        await pilot.press("enter")
        await wait_for(pilot, lambda: pane.table.has_focus)
        await pilot.press("e", "end", *" e/")
        assert pane.editor.text.endswith(" e/") and pane.editor.text_area.has_focus


@sync
async def test_a_latin1_caption_is_edited_as_its_letters_and_saved_as_utf8_not_as_replacement_characters(project):
    (project / "images/cat_01.txt").write_bytes("chat au café, très mignon".encode("latin-1"))
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        editor = await select(pilot, pane, "images/cat_01.png")
        assert editor.text == "chat au café, très mignon" and not editor.dirty
        assert pane.table.current.caption == "chat au café, très mignon"
        await pilot.press("e", "end", *", roux", "ctrl+s")
        await wait_for(pilot, lambda: not editor.dirty)
        assert (project / "images/cat_01.txt").read_bytes() == "chat au café, très mignon, roux".encode("utf-8")


@sync
async def test_saving_a_latin1_caption_clears_its_not_utf8_flag_at_once_and_a_latin1_write_sets_it(project):
    path = project / "images/cat_01.txt"
    path.write_bytes("chat au café".encode("latin-1"))
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        editor = await select(pilot, pane, "images/cat_01.png")
        not_utf8 = lambda: [f for f in pane.table.current.flags if f.startswith("caption not UTF-8")]  # noqa: E731
        assert not_utf8() and "not UTF-8" in str(pane.query_one("#preview-facts").render())
        await pilot.press("e", "end", *", roux", "ctrl+s")
        await wait_for(pilot, lambda: not editor.dirty)
        assert not not_utf8()  # the row and the details, without waiting for a rescan
        assert "not UTF-8" not in str(pane.query_one("#preview-facts").render())
        pane.files_changed({path})  # as the watcher reports our own write: still UTF-8
        assert not not_utf8()
        path.write_bytes("chat au café, très".encode("latin-1"))  # another program writes Latin-1
        pane.files_changed({path})
        assert not_utf8() and pane.table.current.caption == "chat au café, très"


@sync
async def test_when_the_edited_image_leaves_the_filtered_list_the_list_keeps_the_keys(project):
    app = app_for(project)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        await pilot.press("f", "f")  # any flag, then the first flag: "no caption" (only dog_02)
        await wait_for(pilot, lambda: pane.flag == "no caption" and len(pane.table.items) == 1)
        await pilot.press("e", *"a brown dog", "ctrl+s")
        await wait_for(pilot, lambda: (project / "images/dog_02.txt").exists())
        pane.rescan()  # as the file watcher does: dog_02 is no longer flagged, the list is empty
        await wait_for(pilot, lambda: not pane.table.items)
        assert pane.table.has_focus  # not a disabled editor, where f, / and escape did nothing
        await pilot.press("f")
        assert pane.flag != "no caption"  # the key reached the pane
