"""Dialog: a new run config from a method's template — pick the method, name the file.

DreamBooth asks for its two prompts too (the identifier prompt and the class prompt, as kohya's
DreamBooth tab does): the class prompt is required with prior preservation, so a config made
without it would fail validation the moment it is written.
"""
from __future__ import annotations

import re

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from engine.config import METHODS
from tui import actions

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class NewConfigScreen(ModalScreen[tuple[str, str, dict[str, str]] | None]):
    """Returns (method, name, settings) or None; settings maps dotted keys to values (`dreambooth.class_prompt`)."""

    ACTION_SCOPE = "dialog"
    BINDINGS = actions.bindings("dialog")

    DEFAULT_CSS = """
    NewConfigScreen { align: center middle; }
    NewConfigScreen > Vertical { width: 64; height: auto; border: thick $primary; background: $surface; padding: 0 1; }
    NewConfigScreen Horizontal { height: auto; }
    NewConfigScreen Label { width: 10; padding: 1 1 0 0; }
    NewConfigScreen Select, NewConfigScreen Input { width: 1fr; }
    NewConfigScreen #new-config-error { color: $error; height: auto; }
    NewConfigScreen Button { margin-right: 1; }
    """

    def __init__(self, existing: set[str]) -> None:
        super().__init__()
        self.existing = existing

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("New run config from a method's defaults", classes="title")
            with Horizontal():
                yield Label("method")
                yield Select(((m, m) for m in METHODS), value="lora", allow_blank=False, id="new-config-method")
            with Horizontal():
                yield Label("name")
                yield Input(self._free_name("lora"), id="new-config-name", placeholder="configs/<name>.toml")
            with Horizontal(id="new-config-instance-row", classes="dreambooth"):
                yield Label("instance")
                yield Input("", id="new-config-instance", placeholder="a photo of sks dog (empty: the captions)")
            with Horizontal(id="new-config-class-row", classes="dreambooth"):
                yield Label("class")
                yield Input("", id="new-config-class", placeholder="a photo of a dog (for prior preservation)")
            yield Static("", id="new-config-error", markup=False)
            with Horizontal():
                yield Button("Create (enter)", id="ok", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = getattr(self.app, "animations", True)
        self._sync()
        self.query_one(Select).focus()

    def _sync(self) -> None:
        dreambooth = self.query_one(Select).value == "dreambooth"
        for row in self.query(".dreambooth"):
            row.display = dreambooth

    def _free_name(self, base: str) -> str:
        name, n = base, 2
        while name in self.existing:
            name, n = f"{base}-{n}", n + 1
        return name

    @on(Select.Changed)
    def _method(self, event: Select.Changed) -> None:
        name = self.query_one("#new-config-name", Input)
        if not name.value or name.value.split("-")[0] in METHODS:
            name.value = self._free_name(str(event.value))
        self._sync()

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def action_submit(self) -> None:
        name = self.query_one("#new-config-name", Input).value.strip().removesuffix(".toml")
        error = ""
        if not _NAME.match(name):
            error = f"{name!r}: use letters, digits, '_', '-' and '.' (it becomes configs/<name>.toml)"
        elif name in self.existing:
            error = f"configs/{name}.toml exists already"
        method = str(self.query_one(Select).value)
        settings: dict[str, str] = {}
        if method == "dreambooth" and not error:
            instance = self.query_one("#new-config-instance", Input).value.strip()
            klass = self.query_one("#new-config-class", Input).value.strip()
            if not klass:
                error = ("class prompt: required (prior preservation trains on images of the class, "
                         "e.g. 'a photo of a dog')")
            settings = {"dreambooth.class_prompt": klass}
            if instance:
                settings["dreambooth.instance_prompt"] = instance
        if error:
            self.query_one("#new-config-error", Static).update(error)
            return
        self.dismiss((method, name, settings))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
