"""One registry of named actions: bindings, the help screen and the command palette all come from it."""
from __future__ import annotations

import pytest

from tests.test_tui_support import make_project, sync, wait_for
from tui import actions
from tui.app import load_settings, make_app
from tui.screens.help import help_table


def test_every_action_has_a_unique_id_a_known_scope_and_words():
    ids = [a.id for a in actions.ACTIONS]
    assert len(ids) == len(set(ids))
    for a in actions.ACTIONS:
        assert a.scope in actions.SCOPES and a.id.startswith(a.scope + ".") and a.description and a.label


def test_every_owner_binds_exactly_its_scope():
    from tui.app import TunelabApp
    from tui.screens.conflict import ConflictScreen
    from tui.screens.help import HelpScreen
    from tui.screens.home import HomeScreen
    from tui.screens.project import ProjectScreen
    from tui.widgets.bulk_dialog import BulkDialog
    from tui.widgets.caption_editor import CaptionEditor
    from tui.widgets.configs_pane import ConfigsPane
    from tui.widgets.dataset_pane import DatasetPane
    from tui.widgets.dataset_table import DatasetTable

    owners = {"app": TunelabApp, "home": HomeScreen, "project": ProjectScreen, "dataset": DatasetPane,
              "list": DatasetTable, "caption": CaptionEditor, "configs": ConfigsPane, "bulk": BulkDialog,
              "conflict": ConflictScreen, "help": HelpScreen}
    for scope, cls in owners.items():
        bound = {b.id for b in cls.BINDINGS}
        assert bound == {a.id for a in actions.in_scope(scope) if not a.builtin}, scope
        for a in actions.in_scope(scope):
            if not a.builtin:
                assert hasattr(cls, "action_" + a.action.split("(")[0]), a.id


def test_help_lists_every_action_with_its_keys():
    table = help_table({"caption.next": "ctrl+j"})
    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(table)
    text = console.export_text()
    for a in actions.ACTIONS:
        assert a.label in text, a.id
        if not a.builtin:  # the id a user's [keys] table names
            assert a.id in text, a.id
    assert "ctrl+j" in text and "alt+↓" not in text


def test_settings_rebind_keys_and_report_mistakes(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text('images = "sixel"\n[keys]\n"caption.next" = "ctrl+j"\n"no.such" = "x"\n')
    settings, problem = load_settings(path)
    assert settings["keys"] == {"caption.next": "ctrl+j"} and settings["images"] == "sixel"
    assert "keys.no.such: unknown action" in problem


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_project(tmp_path / "projects")


@sync
async def test_palette_offers_the_actions_on_screen_and_runs_them(project):
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.screen.summaries)
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
        provider = actions.ActionsProvider(app.screen)
        labels = [label for label, _, _ in provider._commands()]
        assert "Dataset: Bulk captions  [b]" in labels and "Configs: New config  [n]" in labels
        assert not any(label.startswith("Projects:") for label in labels)  # Home is not on screen
        command = next(c for label, _, c in provider._commands() if label.startswith("Project: Configs"))
        await command()
        await pilot.pause()
        assert app.screen.query_one("TabbedContent").active == "configs"
        await pilot.press("f1")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen")
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")


@sync
async def test_a_rebound_key_works(project):
    app = make_app(project.parent, images="none", watch=False, animations=False,
                   settings={"keys": {"dataset.bulk": "ctrl+g"}})
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.screen.summaries)
        await pilot.press("enter")
        pane = None
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
        pane = app.screen.query_one("DatasetPane")
        await wait_for(pilot, lambda: pane.dataset is not None)
        await pilot.press("ctrl+g")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "BulkDialog")


@sync
async def test_the_real_palette_lists_and_runs_an_action_whose_key_looks_like_markup(project):
    # "Dataset: Filter  [/]" once raised MarkupError inside the palette and took the app down
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_for(pilot, lambda: app.screen.summaries)
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
        pane = app.screen.query_one("DatasetPane")
        await wait_for(pilot, lambda: pane.dataset is not None)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "CommandPalette")
        palette = app.screen
        options = palette.query_one("CommandList")
        await wait_for(pilot, lambda: options.option_count > 5)  # the discovery list, before typing
        shown = [str(options.get_option_at_index(i).prompt) for i in range(options.option_count)]
        assert any("Dataset: Filter  [/]" in text for text in shown)
        await pilot.press(*"filter the images")
        await wait_for(pilot, lambda: options.option_count >= 1
                       and "Filter  [/]" in str(options.get_option_at_index(0).prompt))
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
        await wait_for(pilot, lambda: app.screen.query_one("#dataset-filter").has_focus)
