"""Dialog: a new project, made by the same code as `tunelab new` (`tui.commands.new.create_project`)."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from tui import actions


class NewProject(NamedTuple):
    path: Path
    summary: list[str]  # what --from brought in and left out, as `tunelab new` prints it ([] without a folder)


def create_project(projects_dir: Path, name: str, source: str = "") -> NewProject:
    """Create `projects_dir/name` like `tunelab new NAME [--from DIR]`; raises ValueError/OSError with the reason."""
    from tui.commands.new import create_project as create, from_summary, project_path

    if "/" in name:
        raise ValueError(f"{name!r}: a name, not a path (the project goes in {projects_dir})")
    path = project_path(name.strip(), projects_dir)
    src = Path(source).expanduser() if source.strip() else None
    if src is not None and not src.is_dir():
        raise ValueError(f"{source}: not a folder")
    projects_dir.mkdir(parents=True, exist_ok=True)
    created = create(path, src)
    return NewProject(path, from_summary(created, src, path) if src is not None else [])


class NewProjectScreen(ModalScreen[NewProject | None]):
    """Returns the new project's folder and what --from skipped, or None."""

    ACTION_SCOPE = "dialog"
    BINDINGS = actions.bindings("dialog")

    DEFAULT_CSS = """
    NewProjectScreen { align: center middle; }
    NewProjectScreen > Vertical { width: 72; height: auto; border: thick $primary; background: $surface; padding: 0 1; }
    NewProjectScreen Horizontal { height: auto; }
    NewProjectScreen Label { width: 12; padding: 1 1 0 0; }
    NewProjectScreen Input { width: 1fr; }
    NewProjectScreen #new-project-error { color: $error; height: auto; }
    NewProjectScreen Button { margin-right: 1; }
    """

    def __init__(self, projects_dir: Path) -> None:
        super().__init__()
        self.projects_dir = projects_dir

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(f"New project in {self.projects_dir}  (same as `tunelab new NAME [--from DIR]`)",
                         markup=False)
            with Horizontal():
                yield Label("name")
                yield Input("", id="new-project-name", placeholder="my-dog")
            with Horizontal():
                yield Label("images from")
                yield Input("", id="new-project-from", placeholder="optional: a folder to copy images and captions from")
            yield Static("", id="new-project-error", markup=False)
            with Horizontal():
                yield Button("Create (enter)", id="ok", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = getattr(self.app, "animations", True)
        self.query_one("#new-project-name", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def action_submit(self) -> None:
        name = self.query_one("#new-project-name", Input).value.strip()
        source = self.query_one("#new-project-from", Input).value
        try:
            made = create_project(self.projects_dir, name, source)
        except (ValueError, OSError) as e:
            self.query_one("#new-project-error", Static).update(str(e))
            return
        self.dismiss(made)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
