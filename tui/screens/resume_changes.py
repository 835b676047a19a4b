"""Dialog: resume a run that would otherwise end at once — train a finished run to more epochs, or give a
run stopped by `budget.max_hours` more hours. It returns the `--set` overrides of `tunelab resume`
(engine/resume.py checks and applies them in the Runs tab's worker; a refusal is shown there).
"""
from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static

from tui import actions


class ResumeChangesScreen(ModalScreen[list[str] | None]):
    """Returns the overrides (`train.epochs=60`, `budget.max_hours=4`) or None (cancelled)."""

    ACTION_SCOPE = "dialog"
    BINDINGS = actions.bindings("dialog")

    DEFAULT_CSS = """
    ResumeChangesScreen { align: center middle; }
    ResumeChangesScreen > Vertical { width: 68; height: auto; border: thick $primary; background: $surface; padding: 0 1; }
    ResumeChangesScreen Horizontal { height: auto; }
    ResumeChangesScreen Label { width: 18; padding: 1 1 0 0; }  /* "budget.max_hours" whole */
    ResumeChangesScreen Input { width: 1fr; }
    ResumeChangesScreen #resume-error { color: $error; height: auto; }
    ResumeChangesScreen Button { margin-right: 1; }
    """

    def __init__(self, run_id: str, *, why: str, epochs: int, max_hours: float) -> None:
        super().__init__()
        self.run_id, self.why, self.epochs, self.max_hours = run_id, why, epochs, max_hours

    def compose(self) -> ComposeResult:
        finished = self.why == "finished"
        with Vertical():
            yield Static(f"Resume {self.run_id}", classes="title")
            yield Static(f"It finished its {self.epochs} epochs. Train it on to more:" if finished else
                         f"Its time budget stopped it (budget.max_hours = {self.max_hours:g} h). Give it more:",
                         markup=False)
            with Horizontal():
                yield Label("train.epochs")
                yield Input(str(self.epochs * 2 if finished else self.epochs), id="resume-epochs", type="integer")
            with Horizontal():
                yield Label("budget.max_hours")
                yield Input(f"{self.max_hours:g}" if finished else f"{self.max_hours * 2:g}", id="resume-hours",
                            type="number", placeholder="0: no limit")
            yield Static("Hours count over every attempt of the run; 0 is no limit. A cosine or linear "
                         "schedule is recomputed for the new length (see tunelab resume --help).",
                         markup=False, classes="hint")
            yield Static("", id="resume-error", markup=False)
            with Horizontal():
                yield Button("Resume (enter)", id="ok", variant="primary")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        for field in self.query(Input):
            field.cursor_blink = getattr(self.app, "animations", True)
        self.query_one("#resume-epochs" if self.why == "finished" else "#resume-hours", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#ok")
    def action_submit(self) -> None:
        epochs = self.query_one("#resume-epochs", Input).value.strip()
        hours = self.query_one("#resume-hours", Input).value.strip()
        try:
            n, h = int(epochs), float(hours or 0)
        except ValueError:
            self.query_one("#resume-error", Static).update("train.epochs: a whole number; budget.max_hours: a number")
            return
        overrides = []
        if n != self.epochs:
            overrides.append(f"train.epochs={n}")
        if h != self.max_hours:
            overrides.append(f"budget.max_hours={h:g}")
        if not overrides:
            self.query_one("#resume-error", Static).update(
                "nothing changed: the run would end again at once; raise train.epochs or budget.max_hours")
            return
        self.dismiss(overrides)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
