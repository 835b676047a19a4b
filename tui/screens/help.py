"""The help screen, generated from the action registry (`tui.actions`) with the keys in effect now."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from tui import actions
from tui.widgets.key_footer import KeyFooter


def help_table(keymap: dict[str, str] | None = None) -> Table:
    table = Table(box=None, show_header=False, expand=True, padding=(0, 2, 0, 0))
    # wraps, so a section title longer than the column ("Compare (contact sheet)") is not cut to "…shee…"
    table.add_column("keys", style="bold", width=22, overflow="fold")
    table.add_column("what", ratio=1)
    table.add_column("id", style="dim", no_wrap=True)  # what the settings file's [keys] table names
    for scope, title in actions.SCOPES.items():
        rows = actions.in_scope(scope)
        if not rows:
            continue
        table.add_row(Text(title, style="bold underline"), "", "")
        for a in rows:
            table.add_row(actions.key_display(actions.effective_keys(a, keymap)), a.label,
                          "" if a.builtin else a.id)
        table.add_row("", "", "")
    return table


INTRO = (
    "tunelab — fine-tune Stable Diffusion from a terminal. Every key below is a named action: the command "
    "palette (ctrl+p) runs any of them by name, and a [keys] table in the settings file rebinds them by the id "
    "in the right column (e.g. `\"caption.next\" = \"ctrl+j\"`; see docs/tui.md). Runs are separate processes: "
    "quitting never stops one.\n"
)


class HelpScreen(Screen[None]):
    ACTION_SCOPE = "help"
    BINDINGS = actions.bindings("help")

    DEFAULT_CSS = """
    HelpScreen VerticalScroll { padding: 0 2; }
    HelpScreen #help-intro { margin: 1 0; color: $text-muted; }
    """

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static(INTRO, id="help-intro", markup=False)
            yield Static(help_table(getattr(self.app, "_keymap", None)), id="help-table")
        yield KeyFooter()

    def action_close(self) -> None:
        self.dismiss(None)
