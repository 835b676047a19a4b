"""Bulk caption operations from the Dataset tab: preview the plan's diff, apply, undo."""
from __future__ import annotations

import pytest

from tests.test_tui_support import make_project, sync, wait_for
from tui.app import make_app
from tui.widgets.bulk_dialog import build_plan


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_project(tmp_path / "projects")


async def open_dataset(pilot, app):
    await wait_for(pilot, lambda: type(app.screen).__name__ == "HomeScreen" and app.screen.summaries)
    await pilot.press("enter")
    await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
    pane = app.screen.query_one("DatasetPane")
    await wait_for(pilot, lambda: pane.dataset is not None)
    return pane


def captions(project) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((project / "images").glob("*.txt"))}


@sync
async def test_prefix_shows_the_diff_first_then_applies_and_undoes(project):
    before = captions(project)
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        await pilot.press("slash", *"cat", "enter")  # only the images shown
        await pilot.press("b")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "BulkDialog")
        dialog = app.screen
        dialog.query_one("#bulk-op").value = "prefix"
        dialog.query_one("#bulk-text").value = "sks"
        await wait_for(pilot, lambda: dialog.plan is not None and dialog.plan.operation == "prefix `sks`")
        # the preview: a per-file diff, nothing written yet
        shown = "\n".join(str(line.text) for line in dialog.query_one("#bulk-diff").lines)
        assert "-a photo of a ginger cat, sitting" in shown and "+sks, a photo of a ginger cat, sitting" in shown
        assert "2 caption(s) to change" in str(dialog.query_one("#bulk-summary").render())
        assert captions(project) == before
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
        after = captions(project)
        assert after["cat_01.txt"] == "sks, a photo of a ginger cat, sitting"
        assert after["cat_02.txt"] == "sks, a photo of a black cat, sleeping"
        assert after["dog_01.txt"] == before["dog_01.txt"]  # filtered out: untouched
        await wait_for(pilot, lambda: pane.table.current is not None and pane.table.current.caption.startswith("sks"))
        # undo restores exactly
        await pilot.press("u")
        await wait_for(pilot, lambda: captions(project) == before)
        await wait_for(pilot, lambda: not pane.scanning and not pane.table.current.caption.startswith("sks"))


@sync
async def test_cancel_writes_nothing(project):
    before = captions(project)
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_dataset(pilot, app)
        await pilot.press("b")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "BulkDialog")
        app.screen.query_one("#bulk-op").value = "empty"
        app.screen.query_one("#bulk-overwrite").value = True
        await wait_for(pilot, lambda: app.screen.plan is not None)
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
        assert captions(project) == before


@sync
async def test_undo_refuses_when_a_file_changed_since(project):
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_dataset(pilot, app)
        plan = build_plan("suffix", pane.dataset, pane.dataset.items, "hd")
        from engine.captions import apply_plan

        apply_plan(plan, project)
        (project / "images/tiny.txt").write_text("edited by hand")
        await pilot.press("u")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ErrorScreen")
        assert "changed since" in str(app.screen.query_one("#error-message").render())
        assert (project / "images/tiny.txt").read_text() == "edited by hand"
        assert (project / "images/cat_01.txt").read_text().endswith(", hd")


def test_template_plan_uses_the_projects_metadata(project):
    from engine.project import scan_project

    ds = scan_project(project)
    plan = build_plan("template", ds, ds.items, "a {kind} called {name}")
    assert [c.new for c in plan.changes] == ["a dog called dog 2"]  # only the uncaptioned one by default
    plan = build_plan("template", ds, ds.items, "a {kind} called {name}", overwrite=True)
    assert len(plan.changes) == 5  # broken.png is unusable, so not a target
    from engine.captions import CaptionError

    with pytest.raises(CaptionError, match="missing"):
        build_plan("template", ds, ds.items, "{nope}")


def test_the_dialogs_template_error_counts_every_image_it_covers(tmp_path):
    from engine.captions import CaptionError
    from engine.project import scan_project
    from tests.test_captions_cli import two_concepts_sharing_project_metadata

    ds = scan_project(two_concepts_sharing_project_metadata(tmp_path))
    with pytest.raises(CaptionError, match=r"14 image\(s\) lack it"):
        build_plan("template", ds, ds.items, "{name} {type1}")


@sync
async def test_the_dialog_warns_when_training_will_not_read_the_files_it_writes(project):
    with open(project / "project.toml", "a") as f:
        f.write('\n[[concepts]]\nfolder = "images"\ncaption = "template"\ntemplate = "a {kind}"\n')
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_dataset(pilot, app)
        await pilot.press("b")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "BulkDialog")
        note = app.screen.query_one("#bulk-note")
        assert note.display
        text = str(note.render())
        assert "'images' (caption = 'template')" in text and 'set caption = "sidecar"' in text


@sync
async def test_no_warning_for_sidecar_concepts(project):
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await open_dataset(pilot, app)
        await pilot.press("b")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "BulkDialog")
        assert not app.screen.query_one("#bulk-note").display


@sync
async def test_a_regex_in_brackets_is_shown_as_typed_in_the_summary_and_the_toasts(project):
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40), notifications=True) as pilot:  # toasts drawn
        await open_dataset(pilot, app)
        await pilot.press("b")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "BulkDialog")
        dialog = app.screen
        dialog.query_one("#bulk-op").value = "replace"
        dialog.query_one("#bulk-text").value = r"\b[ck]at\b"
        dialog.query_one("#bulk-replacement").value = "pet"
        await wait_for(pilot, lambda: dialog.plan is not None and dialog.plan.changes)
        typed = r"replace `\b[ck]at\b` -> `pet`"  # was '\\b[ck]at\\b'
        assert str(dialog.query_one("#bulk-summary").render()).startswith(typed)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")

        def toasts() -> str:
            return " ".join(str(t.render()) for t in app.screen.query("Toast"))

        # The toast is not Rich markup: `[ck]` stayed in it (it read 'replace `\bat\b`').
        await wait_for(pilot, lambda: f"{typed}: wrote" in toasts())
        await pilot.press("u")
        await wait_for(pilot, lambda: f"undid {typed}: restored" in toasts())
