"""The choice when a caption changed on disk while it had unsaved edits: keep mine, take theirs, or merge.

Both versions are shown side by side, with the caption as it was when the edit began, and a third
box starts as a three-way merge of the comma-separated parts (what either side added is kept, what
one side removed and the other left alone goes) so the user can edit it. The screen returns
`(choice, text)` — `("mine", mine)`, `("theirs", theirs)`, `("merged", edited)` — or None for
"decide later", which leaves the edit unsaved in the editor.
"""
from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static, TextArea

from tui import actions


def _parts(text: str | None) -> list[str]:
    return [p.strip() for p in (text or "").split(",") if p.strip()]


def merge_start(mine: str, theirs: str | None, base: str | None = None) -> str:
    """A starting point for a merge of comma-separated captions (tags, phrases).

    Mine in its order, less the parts theirs removed from `base` (the caption when the edit began)
    that mine left as they were, then the parts theirs added. Without a base: mine, then the parts
    of theirs that mine lacks. Only a suggestion: the user edits it before saving.
    """
    if not theirs:
        return mine
    if not mine:
        return theirs
    base_parts, mine_parts, theirs_parts = _parts(base), _parts(mine), _parts(theirs)
    removed_by_them = {p for p in base_parts if p not in theirs_parts}
    kept = [p for p in mine_parts if p not in removed_by_them]
    added = [p for p in theirs_parts if p not in mine_parts and p not in base_parts]
    return ", ".join(kept + added)


class ConflictScreen(ModalScreen[tuple[str, str] | None]):
    ACTION_SCOPE = "conflict"
    BINDINGS = actions.bindings("conflict")
    # The four buttons take 95 cells in a row: narrower than that (an 80-column terminal) they go
    # two by two without their borders, in the same three rows, so "Decide later" is not cut off.
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    DEFAULT_CSS = """
    ConflictScreen { align: center middle; }
    ConflictScreen > Vertical { width: 90%; max-width: 110; height: auto; max-height: 90%;
        border: thick $warning; background: $surface; padding: 0 1; }
    ConflictScreen #conflict-title { text-style: bold; color: $warning; }
    ConflictScreen #conflict-versions { height: auto; }
    ConflictScreen .version { width: 1fr; height: auto; padding: 0 1 0 0; }
    ConflictScreen .version-label { color: $text-muted; }
    ConflictScreen #conflict-base { color: $text-muted; }
    ConflictScreen .version-text { border: round $panel-lighten-2; height: auto; max-height: 8; padding: 0 1; }
    ConflictScreen #conflict-merge { height: 5; }
    ConflictScreen #conflict-buttons { height: auto; margin-top: 1; }
    ConflictScreen Button { margin-right: 1; }
    ConflictScreen.-narrow #conflict-buttons { layout: grid; grid-size: 2; grid-gutter: 1 2; }
    ConflictScreen.-narrow #conflict-buttons Button { border: none; height: 1; width: 1fr; min-width: 0;
        margin: 0; }
    ConflictScreen.-narrow #theirs, ConflictScreen.-narrow #later { background: $panel-lighten-1; }
    """

    def __init__(self, path: Path, rel: str, mine: str, theirs: str | None, base: str | None = None) -> None:
        super().__init__()
        self.path = path
        self.rel = rel
        self.mine = mine
        self.theirs = theirs
        self.base = base

    def compose(self) -> ComposeResult:
        theirs_text = self.theirs if self.theirs is not None else "(the caption file was deleted)"
        with Vertical():
            yield Static(f"{self.path.name} changed on disk while you were editing it", id="conflict-title",
                         markup=False)
            yield Static(f"{self.rel}: nothing is written until you choose. Escape keeps your edit unsaved.",
                         markup=False)
            was = self.base if self.base is not None else "(no caption file)"
            yield Static(f"when you started editing: {was or '(empty)'}", id="conflict-base", markup=False)
            with Horizontal(id="conflict-versions"):
                with Vertical(classes="version"):
                    yield Label("mine (unsaved)", classes="version-label")
                    yield Static(self.mine or "(empty)", id="conflict-mine", classes="version-text", markup=False)
                with Vertical(classes="version"):
                    yield Label("theirs (on disk now)", classes="version-label")
                    yield Static(theirs_text or "(empty)", id="conflict-theirs", classes="version-text", markup=False)
            yield Label("merge (edit, then ctrl+s):", classes="version-label")
            yield TextArea(merge_start(self.mine, self.theirs, self.base), id="conflict-merge", soft_wrap=True)
            with Horizontal(id="conflict-buttons"):
                yield Button("Keep mine (ctrl+k)", id="mine", variant="primary")
                yield Button("Take theirs (ctrl+t)", id="theirs")
                yield Button("Save merge (ctrl+s)", id="merged", variant="success")
                yield Button("Decide later (esc)", id="later")

    def on_mount(self) -> None:
        area = self.query_one("#conflict-merge", TextArea)
        area.cursor_blink = getattr(self.app, "animations", True)
        self.query_one("#mine", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "later":
            self.action_later()
        elif event.button.id:
            self.action_choose(event.button.id)

    def action_choose(self, kind: str) -> None:
        if kind == "mine":
            self.dismiss(("mine", self.mine))
        elif kind == "theirs":
            self.dismiss(("theirs", self.theirs or ""))
        else:
            self.dismiss(("merged", self.query_one("#conflict-merge", TextArea).text))

    def action_later(self) -> None:
        self.dismiss(None)
