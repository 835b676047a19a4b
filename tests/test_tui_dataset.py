"""The Dataset tab: the list, its filters, the preview and its thumbnail cache."""
from __future__ import annotations

import pytest

from tests.test_tui_support import make_project, sync, wait_for
from tui.app import make_app
from tui.thumbnails import THUMBS_DIR, make_thumbnail
from tui.widgets.dataset_table import DatasetTable


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = make_project(tmp_path / "projects")
    with open(p / "configs/lora.toml", "a") as f:  # 32 px training: only the 16x16 image is too small
        f.write("\n[data]\nresolution = 32\n")
    return p


async def open_dataset(pilot, app):
    await wait_for(pilot, lambda: type(app.screen).__name__ == "HomeScreen" and app.screen.summaries)
    await pilot.press("enter")
    await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
    pane = app.screen.query_one("DatasetPane")
    await wait_for(pilot, lambda: pane.dataset is not None)
    return pane


def rels(pane) -> list[str]:
    return [it.rel for it in pane.table.items]


@sync
async def test_opening_a_project_lists_every_image_with_its_flags(project):
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        assert rels(pane) == ["images/broken.png", "images/cat_01.png", "images/cat_02.png", "images/dog_01.png",
                              "images/dog_02.png", "images/tiny.png"]
        flags = {it.rel: it.flags for it in pane.table.items}
        assert flags["images/dog_02.png"] == ["no caption"]
        assert flags["images/broken.png"][0].startswith("unreadable")
        # "too small" is measured against the configs' training resolution (the smallest valid one)
        assert flags["images/tiny.png"] == ["too small (16x16, shorter side < 32)"]
        assert flags["images/cat_02.png"] == []
        assert pane.table.has_focus
        assert "6 images" in str(pane.query_one("#dataset-count").render())


@sync
async def test_filter_by_text_and_by_flag(project):
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        await pilot.press("slash", *"cat")
        assert rels(pane) == ["images/cat_01.png", "images/cat_02.png"]
        assert "2 of 6" in str(pane.query_one("#dataset-count").render())
        await pilot.press(*" sleep")  # every word must match
        assert rels(pane) == ["images/cat_02.png"]
        await pilot.press("enter")  # back to the list
        assert pane.table.has_focus
        pane.query_one("#dataset-filter").value = ""
        await pilot.pause()
        await pilot.press("f")  # any flag
        assert rels(pane) == ["images/broken.png", "images/dog_02.png", "images/tiny.png"]
        await pilot.press("f")  # the first flag by name
        assert pane.flag == "no caption" and rels(pane) == ["images/dog_02.png"]
        await pilot.press("f", "f")  # ... too small, unreadable
        assert pane.flag == "unreadable" and rels(pane) == ["images/broken.png"]
        # a filter that hides everything says so (not "no images in this project")
        await pilot.press("slash", *"zebra")
        assert rels(pane) == []
        assert pane.table.empty_text.startswith("no image matches the text 'zebra' and flag 'unreadable' (6 hidden)")
        await pilot.press("enter", "f")  # back to all
        assert pane.flag is None and rels(pane) == []
        assert "no image matches the text 'zebra' (6 hidden)" in pane.table.empty_text
        pane.query_one("#dataset-filter").value = ""
        await pilot.pause()
        assert len(rels(pane)) == 6


@sync
async def test_a_config_with_a_larger_resolution_flags_more_after_it_is_edited(project):
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        assert sum(1 for it in pane.items if any(f.startswith("too small") for f in it.flags)) == 1
        lora = project / "configs/lora.toml"
        lora.write_text(lora.read_text().replace("resolution = 32", "resolution = 56"))
        pane.files_changed({lora})
        await wait_for(pilot, lambda: not pane.scanning and pane.dataset is not None and sum(
            1 for it in pane.items if any(f.startswith("too small") for f in it.flags)) == 3)
        small = sorted(it.rel for it in pane.items if any(f.startswith("too small") for f in it.flags))
        assert small == ["images/cat_02.png", "images/dog_01.png", "images/tiny.png"]  # 64x48, 48x64, 16x16


@sync
async def test_preview_shows_the_image_or_why_it_cannot(project, tmp_path):
    app = make_app(project.parent, images="halfblock", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        preview = pane.query_one("ImagePreview")
        await wait_for(pilot, lambda: preview.last is not None)
        assert preview.last.image is None  # broken.png comes first
        assert "cannot show broken.png" in str(preview.query_one("#preview-placeholder").render())
        await pilot.press("down")
        await wait_for(pilot, lambda: preview.last.source.name == "cat_01.png")
        assert preview.last.image is not None
        assert preview.query_one("#preview-image").display
        thumbs = list((project / THUMBS_DIR).rglob("*.png"))
        assert len(thumbs) == 1


def test_thumbnails_are_cached_by_path_mtime_and_size(project):
    src = project / "images/cat_01.png"
    first = make_thumbnail(src, project, (64, 64))
    again = make_thumbnail(src, project, (64, 64))
    assert first.image is not None and not first.cached and again.cached
    assert first.image.size == again.image.size == (64, 64)
    src.write_bytes(src.read_bytes())  # same content, new mtime: a new entry
    import os
    os.utime(src, (1, 1))
    assert not make_thumbnail(src, project, (64, 64)).cached
    bad = make_thumbnail(project / "images/broken.png", project, (64, 64))
    assert bad.image is None and "not an image" in bad.error


def test_a_sixteen_bit_greyscale_png_previews_with_its_brightness(project):
    import numpy as np
    from PIL import Image

    src = project / "images/grey16.png"
    Image.fromarray(np.full((40, 60), 32768, dtype=np.uint16)).save(src)  # mid grey, 16 bits
    thumb = make_thumbnail(src, project, (64, 64), use_cache=False)
    assert thumb.error == "" and thumb.image is not None  # was "cannot decode: image has wrong mode"
    assert thumb.image.getpixel((5, 5)) == (128, 128, 128)  # not clipped to white


@sync
async def test_new_images_on_disk_appear_without_restart(project):
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        new = project / "images" / "zebra.png"
        new.write_bytes((project / "images/cat_01.png").read_bytes())
        pane.files_changed({new})
        await wait_for(pilot, lambda: "images/zebra.png" in rels(pane))


@sync
async def test_the_list_stays_usable_with_thousands_of_images(tmp_path, monkeypatch):
    from engine.project import Item

    monkeypatch.chdir(tmp_path)
    items = [Item(path=tmp_path / f"{i:05d}.png", rel=f"img/{i:05d}.png", concept="c", width=512, height=512,
                  caption=f"caption {i}") for i in range(10_000)]
    from textual.app import App

    class One(App):
        def compose(self):
            yield DatasetTable(id="t")

    app = One()
    async with app.run_test(size=(100, 30)) as pilot:
        table = app.query_one(DatasetTable)
        table.set_items(items)
        table.focus()
        await pilot.press("end")
        assert table.cursor == 9_999 and table.scroll_y > 9_900
        await pilot.press("pageup", "up")
        assert table.current.rel == f"img/{9_999 - table._page() - 1:05d}.png"
        await pilot.press("home")
        assert table.cursor == 0 and table.scroll_y == 0
        table.set_items(items[5000:5010])
        assert table.cursor == 0 and len(table.items) == 10


@sync
async def test_a_broken_project_toml_is_shown_not_raised(project):
    (project / "project.toml").write_text('name = "pets"\nnotez = "typo"\n')
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.screen.summaries)
        app.open_project(project)
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
        pane = app.screen.query_one("DatasetPane")
        await wait_for(pilot, lambda: not pane.scanning)
        text = str(pane.query_one("#dataset-problems").render())
        assert "project.toml" in text and "notez: unknown key; did you mean 'notes'?" in text


@sync
async def test_a_failing_worker_shows_an_error_dialog(project, monkeypatch):
    import tui.widgets.dataset_pane as module

    def explode(*a, **k):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(module, "scan_project", explode)
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.screen.summaries)
        app.open_project(project)
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ErrorScreen")
        assert "disk on fire" in str(app.screen.query_one("#error-message").render())
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")


@sync
async def test_escape_leaves_the_filter_first_then_the_project(project):
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        await pilot.press("slash", *"dog", "escape")
        assert pane.table.has_focus and len(pane.table.items) == 2
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HomeScreen")


def only_configs(project, **configs: str) -> None:
    for old in (project / "configs").glob("*.toml"):
        old.unlink()
    for name, text in configs.items():
        (project / "configs" / f"{name}.toml").write_text(text)


TI = ('method = "textual_inversion"\n\n[model]\nbase = "tiny"\n\n[data]\nresolution = 32\n\n'
      '[textual_inversion]\nplaceholder_token = "<pet>"\n')
LORA = 'method = "lora"\n\n[model]\nbase = "tiny"\n\n[data]\nresolution = 32\n'


@sync
async def test_no_caption_is_not_flagged_when_every_config_trains_on_the_placeholder(project):
    only_configs(project, ti=TI, broken='method = "lora"\n[train]\nepochs = -1\n')  # an invalid config is ignored
    (project / "images/cat_02.txt").write_text("")  # an empty caption: fine too
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        flags = {it.rel: it.flags for it in pane.table.items}
        assert flags["images/dog_02.png"] == [] and flags["images/cat_02.png"] == []
        assert "no caption" not in pane.flags_present() and "empty caption" not in pane.flags_present()
        # the editor of an uncaptioned image says why that is fine
        pane.table.cursor = rels(pane).index("images/dog_02.png")
        editor = pane.editor
        await wait_for(pilot, lambda: editor.item is not None and editor.item.rel == "images/dog_02.png")
        assert editor.text == "" and editor.text_area.placeholder == (
            "no caption — fine: textual inversion trains it on '<pet>'; type one, ctrl+s saves")
        # emptying a caption in the editor does not bring the flag back
        pane.table.cursor = rels(pane).index("images/cat_01.png")
        await wait_for(pilot, lambda: editor.item.rel == "images/cat_01.png")
        await pilot.press("e", "ctrl+a", "delete", "ctrl+s")
        await wait_for(pilot, lambda: not editor.dirty)
        assert pane.table.current.flags == []


@sync
async def test_no_caption_is_flagged_while_any_config_trains_on_the_captions(project):
    only_configs(project, ti=TI, lora=LORA)
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        assert {it.rel: it.flags for it in pane.table.items}["images/dog_02.png"] == ["no caption"]


@sync
async def test_in_a_narrow_terminal_the_file_column_keeps_the_file_names(project):
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(80, 24)) as pilot:
        pane = await open_dataset(pilot, app)
        await pilot.pause()
        lines = ["".join(seg.text for seg in pane.table.render_line(y)) for y in range(1, 7)]
        files = [line.split(" ", 1)[0] for line in lines]
        assert len(set(files)) == 6, files  # cut at the end, every row read "images/ca…" or "images/do…"
        assert all(f.startswith("…") for f in files) and any(f.endswith("at_01.png") for f in files), files
