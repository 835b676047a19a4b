"""The footer at 80 columns: F1 help and the screen's own first keys show, and no key is cut in half."""
from __future__ import annotations

import pytest
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

from tests.test_tui_runs import write_run
from tests.test_tui_support import make_project, sync, wait_for
from tui.app import make_app

pytestmark = pytest.mark.timeout(120)


def footer_keys(screen) -> list[str]:
    """The keys a person sees whole in the footer (left of the command palette's key), in order."""
    footer = screen.query_one(Footer)
    palette = [k for k in footer.query(FooterKey) if k.has_class("-command-palette")]
    edge = palette[0].region.x if palette else footer.region.right
    shown = []
    for key in footer.query(FooterKey):
        if key.has_class("-command-palette") or not key.display or not key.region:
            continue
        assert key.region.right <= edge, f"{key.key_display} {key.description!r} is cut off"
        shown.append(key.key_display)
    return shown


@sync
async def test_at_80_columns_every_screen_shows_f1_help_and_its_first_keys_whole(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TUNELAB_NO_GPU", "1")
    project = make_project(tmp_path / "projects")
    write_run(project, "20260101-000000-lora", state="finished")
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HomeScreen" and app.screen.summaries)
        await pilot.pause()
        seen = {"home": footer_keys(app.screen)}
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
        await wait_for(pilot, lambda: app.screen.query_one("DatasetPane").dataset is not None)
        for tab, key in (("dataset", "1"), ("configs", "2"), ("runs", "3"), ("compare", "4")):
            await pilot.press(key)
            await pilot.pause(0.3)
            seen[tab] = footer_keys(app.screen)
        await pilot.press("3")
        await wait_for(pilot, lambda: app.screen.query_one("RunsPane").query_one("DataTable").row_count == 1)
        await pilot.press("m")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "MonitorScreen")
        await pilot.pause(0.3)
        seen["monitor"] = footer_keys(app.screen)
    for where, keys in seen.items():
        assert keys and keys[0] == "f1", (where, keys)
    assert seen["home"][1:4] == ["⏎", "n", "r"]  # enter Open: the next step, shown
    assert seen["dataset"][1:6] == ["/", "f", "e", "b", "u"]
    assert seen["configs"][1:4] == ["e", "n", "r"]
    assert seen["runs"][1:7] == ["m", "n", "s", "K", "r", "del"]
    assert seen["compare"][2:4] == ["b", "e"]
    assert {"esc", "i", "w", "x"} <= set(seen["monitor"])
