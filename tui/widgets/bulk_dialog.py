"""Bulk caption operations from the TUI, with the same library code as `tunelab caption`.

The dialog builds a plan (`engine.captions.plan_*`, or the CLI's template planner) in a worker as the
user types, shows the plan's summary and per-file diff, and applies exactly the plan shown
(`apply_plan`, which saves the undo journal that `u` in the Dataset tab and `tunelab caption --undo`
use). It works on the images the Dataset tab shows (the filter applies), like `--concept` narrows
the CLI. The dialog returns `(plan, journal_path)` when applied, None when cancelled.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, RichLog, Select, Static
from textual.worker import get_current_worker

from engine import captions as C
from engine.project import Dataset, Item
from tui import actions
from tui.screens.error import ReportsWorkerErrors

OPERATIONS = (
    ("template: captions from metadata fields", "template"),
    ("fixed: one caption for every image", "fixed"),
    ("empty: empty caption files", "empty"),
    ("prefix: put a trigger word in front", "prefix"),
    ("suffix: append text", "suffix"),
    ("replace: find and replace (regex)", "replace"),
)
GATED = ("template", "fixed", "empty")  # write only images without a caption unless "overwrite"
MAX_DIFF_LINES = 2000


def build_plan(op: str, dataset: Dataset, items: Sequence[Item], text: str = "", replacement: str = "",
               overwrite: bool = False, literal: bool = False, ignore_case: bool = False) -> C.Plan:
    """The plan `tunelab caption` would make for the same operation on these items (raises CaptionError)."""
    project_dir = dataset.project_dir
    usable = [i for i in items if i.usable]
    targets = [C.Target(i.path, i.rel) for i in usable]
    mode = "overwrite" if overwrite else "missing"
    if op == "template":
        from engine.project import plan_template_captions

        return plan_template_captions(dataset, usable, text.strip() or None, mode)
    if op == "fixed":
        if not text.strip():
            raise C.CaptionError("type the caption every image gets")
        return C.plan_fixed(targets, text, mode, root=project_dir)
    if op == "empty":
        return C.plan_empty(targets, mode, root=project_dir)
    if op == "prefix":
        return C.plan_prefix(targets, text, root=project_dir)
    if op == "suffix":
        return C.plan_suffix(targets, text, root=project_dir)
    if op == "replace":
        if not text:
            raise C.CaptionError("type what to find")
        return C.plan_replace(targets, text, replacement, literal=literal, ignore_case=ignore_case, root=project_dir)
    raise C.CaptionError(f"unknown operation {op!r}")


def unused_sidecars_note(dataset: Dataset, items: Sequence[Item]) -> str:
    """A warning when some of the images belong to concepts whose captions come from project.toml.

    Bulk operations write sidecar .txt files; for such a concept training reads none of them, which
    `tunelab caption` says too. Empty when every image's concept uses sidecars.
    """
    by_label = {c.label: c for c in dataset.project.concepts}
    kinds: dict[str, str] = {}
    for item in items:
        concept = by_label.get(item.concept)
        if concept is not None and concept.caption != "sidecar":
            kinds.setdefault(concept.label, concept.caption)
    if not kinds:
        return ""
    names = ", ".join(f"{name!r} (caption = {kind!r})" for name, kind in sorted(kinds.items()))
    return (f"note: concept {names} takes its captions from project.toml, so training does not read the .txt "
            "files written here until you set caption = \"sidecar\" for it in project.toml")


def diff_text(plan: C.Plan, limit: int = MAX_DIFF_LINES) -> Text:
    """The plan's diff, coloured, cut at `limit` lines."""
    out = Text()
    lines = plan.diff().splitlines()
    for line in lines[:limit]:
        style = ""
        if line.startswith(("+++", "---")):
            style = "bold"
        elif line.startswith("+"):
            style = "green"
        elif line.startswith("-"):
            style = "red"
        elif line.startswith("@@"):
            style = "dim"
        out.append(line + "\n", style=style)
    if len(lines) > limit:
        out.append(f"… {len(lines) - limit} more diff lines\n", style="dim")
    return out


class BulkDialog(ReportsWorkerErrors, ModalScreen[tuple[C.Plan, Path | None] | None]):
    ACTION_SCOPE = "bulk"
    BINDINGS = actions.bindings("bulk")

    DEFAULT_CSS = """
    BulkDialog { align: center middle; }
    BulkDialog > Vertical { width: 90%; max-width: 120; height: 90%; border: thick $primary;
        background: $surface; padding: 0 1; }
    BulkDialog #bulk-title { text-style: bold; }
    BulkDialog .row { height: auto; }
    BulkDialog .row > Label { width: 14; padding: 1 1 0 0; }
    BulkDialog .row > Input { width: 1fr; }
    BulkDialog #bulk-op { width: 1fr; }
    BulkDialog #bulk-summary { height: auto; color: $text-muted; margin: 1 0 0 0; }
    BulkDialog #bulk-summary.-error { color: $error; }
    BulkDialog #bulk-note { height: auto; color: $warning; }
    BulkDialog #bulk-diff { height: 1fr; border: round $panel-lighten-2; }
    BulkDialog #bulk-buttons { height: auto; }
    BulkDialog Button { margin-right: 1; }
    """

    class Planned(Message):
        def __init__(self, serial: int, plan: C.Plan | None, error: str = "") -> None:
            super().__init__()
            self.serial = serial
            self.plan = plan
            self.error = error

    def __init__(self, dataset: Dataset, items: Sequence[Item], scope_text: str = "", op: str = "template",
                 delay: float = 0.3) -> None:
        super().__init__()
        self.dataset = dataset
        self.items = list(items)
        self.scope_text = scope_text
        self.initial_op = op
        self.delay = delay
        self.plan: C.Plan | None = None
        self._serial = 0
        self._timer = None
        self._applying = False

    def compose(self) -> ComposeResult:
        n = sum(1 for i in self.items if i.usable)
        templates = sorted({c.template for c in self.dataset.project.concepts if c.template})
        with Vertical():
            yield Static(f"Bulk captions — {n} image(s){self.scope_text}", id="bulk-title", markup=False)
            with Horizontal(classes="row"):
                yield Label("operation")
                yield Select(((label, value) for label, value in OPERATIONS), value=self.initial_op,
                             allow_blank=False, id="bulk-op")
            with Horizontal(classes="row"):
                yield Label("text", id="bulk-text-label")
                yield Input(templates[0] if len(templates) == 1 and self.initial_op == "template" else "",
                            id="bulk-text", placeholder="official art of pokemon {name}, {type1}")
            with Horizontal(classes="row", id="bulk-replace-row"):
                yield Label("replace with")
                yield Input("", id="bulk-replacement", placeholder=r"replacement; \1 for a group")
            with Horizontal(classes="row"):
                yield Checkbox("overwrite existing captions", id="bulk-overwrite")
                yield Checkbox("plain text (not a regex)", id="bulk-literal")
                yield Checkbox("ignore case", id="bulk-ignore-case")
            yield Static("", id="bulk-summary", markup=False)
            yield Static(unused_sidecars_note(self.dataset, self.items), id="bulk-note", markup=False)
            yield RichLog(id="bulk-diff", wrap=False, markup=False, highlight=False, auto_scroll=False)
            with Horizontal(id="bulk-buttons"):
                yield Button("Apply (ctrl+s)", id="apply", variant="success", disabled=True)
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        note = self.query_one("#bulk-note", Static)
        note.display = bool(unused_sidecars_note(self.dataset, self.items))
        self._sync_fields()
        self.query_one("#bulk-text", Input).cursor_blink = getattr(self.app, "animations", True)
        self.query_one("#bulk-replacement", Input).cursor_blink = getattr(self.app, "animations", True)
        self.query_one("#bulk-op", Select).focus()
        self._replan(now=True)

    # --- fields ------------------------------------------------------------------------------
    @property
    def op(self) -> str:
        return str(self.query_one("#bulk-op", Select).value)

    def _sync_fields(self) -> None:
        op = self.op
        label = {"template": "template", "fixed": "caption", "prefix": "prefix", "suffix": "suffix",
                 "replace": "find", "empty": "text"}[op]
        self.query_one("#bulk-text-label", Label).update(label)
        self.query_one("#bulk-text", Input).display = op != "empty"
        self.query_one("#bulk-text-label").display = op != "empty"
        self.query_one("#bulk-replace-row").display = op == "replace"
        self.query_one("#bulk-overwrite").display = op in GATED
        self.query_one("#bulk-literal").display = op == "replace"
        self.query_one("#bulk-ignore-case").display = op == "replace"

    @on(Select.Changed, "#bulk-op")
    def _op_changed(self) -> None:
        self._sync_fields()
        self._replan()

    @on(Input.Changed)
    @on(Checkbox.Changed)
    def _field_changed(self) -> None:
        self._replan()

    # --- planning (in a worker) --------------------------------------------------------------
    def _replan(self, now: bool = False) -> None:
        self._serial += 1
        self.plan = None
        self.query_one("#apply", Button).disabled = True
        if self._timer is not None:
            self._timer.stop()
        serial = self._serial
        self._timer = self.set_timer(0 if now else self.delay, lambda: self._start_plan(serial))

    def _start_plan(self, serial: int) -> None:
        if serial != self._serial:
            return
        self.query_one("#bulk-summary", Static).update("planning…")
        self._plan_worker(serial, self.op, self.query_one("#bulk-text", Input).value,
                          self.query_one("#bulk-replacement", Input).value,
                          self.query_one("#bulk-overwrite", Checkbox).value,
                          self.query_one("#bulk-literal", Checkbox).value,
                          self.query_one("#bulk-ignore-case", Checkbox).value)

    @work(thread=True, exclusive=True, group="bulk-plan", exit_on_error=False)
    def _plan_worker(self, serial: int, op: str, text: str, replacement: str, overwrite: bool, literal: bool,
                     ignore_case: bool) -> None:
        try:
            plan = build_plan(op, self.dataset, self.items, text, replacement, overwrite, literal, ignore_case)
            message = self.Planned(serial, plan)
        except C.CaptionError as e:
            message = self.Planned(serial, None, str(e))
        if not get_current_worker().is_cancelled:
            self.post_message(message)

    @on(Planned)
    def _planned(self, event: Planned) -> None:
        if event.serial != self._serial:
            return  # the fields changed since; a newer plan is coming
        summary = self.query_one("#bulk-summary", Static)
        log = self.query_one("#bulk-diff", RichLog)
        log.clear()
        summary.set_class(bool(event.error), "-error")
        if event.plan is None:
            summary.update(event.error)
            return
        self.plan = event.plan
        summary.update(event.plan.summary() + ("" if event.plan.changes else " — nothing to apply"))
        log.write(diff_text(event.plan))
        self.query_one("#apply", Button).disabled = not event.plan.changes

    # --- actions -----------------------------------------------------------------------------
    class Applied(Message):
        def __init__(self, plan: C.Plan, journal: Path | None, error: str = "") -> None:
            super().__init__()
            self.plan = plan
            self.journal = journal
            self.error = error

    @on(Button.Pressed, "#apply")
    def action_apply(self) -> None:
        plan = self.plan
        if plan is None or not plan.changes or self._applying:
            self.app.bell()
            return
        self._applying = True
        for widget in self.query("Input, Select, Checkbox, Button"):
            widget.disabled = True
        self.query_one("#bulk-summary", Static).update(f"writing {len(plan.changes)} caption(s)…")
        self._apply_worker(plan)

    @work(thread=True, exclusive=True, group="bulk-apply", exit_on_error=False)
    def _apply_worker(self, plan: C.Plan) -> None:
        # Thousands of atomic writes (each with an fsync) take seconds: never on the UI thread.
        try:
            journal = C.apply_plan(plan, self.dataset.project_dir)
            self.post_message(self.Applied(plan, journal))
        except (OSError, C.CaptionError) as e:
            self.post_message(self.Applied(plan, None, str(e)))

    @on(Applied)
    def _applied(self, event: Applied) -> None:
        if event.error:
            # Some files may be written: the journal (saved first) still undoes them.
            self.app.notify(f"bulk captions failed: {event.error}; `u` undoes what was written",
                            severity="error", timeout=10)
        self.dismiss((event.plan, event.journal))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        if not self._applying:
            self.dismiss(None)
