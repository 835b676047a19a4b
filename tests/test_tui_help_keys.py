"""F1 lists every key the TUI answers to, as docs/tui.md and docs/tui-runs.md describe them."""
from __future__ import annotations

from rich.console import Console

from tui import actions
from tui.screens.help import help_table


def help_text(width: int = 160) -> str:
    console = Console(width=width, record=True)
    console.print(help_table())
    return console.export_text()


def test_the_contact_sheets_moves_are_registered_and_listed():
    from tui.widgets.contact_grid import ContactGrid

    assert {b.id for b in ContactGrid.BINDINGS} == {a.id for a in actions.in_scope("grid")}
    assert {b.key for b in ContactGrid.BINDINGS} >= {"home", "end", "up", "down", "left", "right"}
    text = help_text()
    assert "The first checkpoint (epoch 0, the base)" in text and "grid.first" in text


def test_the_log_views_own_scroll_keys_are_listed_and_really_bound():
    from tui.widgets.log_view import LogView

    bound = {}
    for cls in reversed(LogView.__mro__):  # Textual merges BINDINGS down the class tree
        for b in cls.__dict__.get("BINDINGS", []):
            for key in b.key.split(","):
                bound[key.strip()] = b.action
    for a in actions.in_scope("log"):
        for key in a.keys.split(","):
            assert bound.get(key) == a.action, (a.id, key, bound.get(key))
    assert "ctrl+pageup" in help_text()


def test_force_stop_is_described_as_the_dialog_and_docs_do():
    text = actions.BY_ID["runs.force_stop"].label
    assert "without a final checkpoint" not in text  # the trainer saves one on SIGTERM if it can
    from engine.launch import FORCE_KILL_AFTER_S

    assert "SIGTERM" in text and f"SIGKILL {FORCE_KILL_AFTER_S:g} s later" in text


def test_section_titles_are_not_cut():
    text = help_text()
    assert "…" not in text  # was "Compare (contact shee…", "Caption changed on di…"
    firsts = " ".join(line[:24].strip() for line in text.splitlines())  # the keys column, titles wrapped
    assert "Compare (contact sheet)" in firsts and "Caption changed on disk (conflict dialog)" in firsts
