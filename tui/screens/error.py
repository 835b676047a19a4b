"""A modal for failures the user should see (a worker that raised, a file that could not be written)."""
from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from tui import actions


class ErrorScreen(ModalScreen[None]):
    ACTION_SCOPE = "dialog"
    BINDINGS = actions.bindings("dialog")

    DEFAULT_CSS = """
    ErrorScreen { align: center middle; }
    ErrorScreen > Vertical { width: 80%; max-width: 100; height: auto; max-height: 80%; border: thick $error;
        background: $surface; padding: 0 1; }
    ErrorScreen #error-title { text-style: bold; color: $error; }
    ErrorScreen VerticalScroll { height: auto; max-height: 20; }
    """

    def __init__(self, title: str, message: str) -> None:
        super().__init__()
        self.title_text = title
        self.message = message

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.title_text, id="error-title", markup=False)
            with VerticalScroll():
                yield Static(self.message, id="error-message", markup=False)
            yield Button("OK (esc)", id="ok", variant="error")

    def on_mount(self) -> None:
        self.query_one(Button).focus()

    @on(Button.Pressed)
    def action_submit(self) -> None:
        self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ReportsWorkerErrors:
    """Mixin for widgets and screens that run workers: a worker that raises is shown in an ErrorScreen.

    (Textual's `Worker.StateChanged` does not bubble, so each owner of workers handles its own.)
    """

    def on_worker_state_changed(self, event) -> None:
        from textual.worker import WorkerState

        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        name = event.worker.name or "a background task"
        self.app.push_screen(ErrorScreen(f"{name} failed", f"{type(error).__name__}: {error}"))  # type: ignore[attr-defined]
