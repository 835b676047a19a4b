"""The Compare tab: a run's contact sheet (prompts grouped by goal kind × checkpoints), live.

A thread worker re-reads the run's sample folders every second (`engine.contact_sheet.load_sheet`: a
listdir and a small JSON per folder) and posts the sheet only when it changed, so new columns and cells
appear while the run writes them. `ContactGrid` shows the page; this pane adds the run and seed choice,
zoom (`enter`), marking the best checkpoint (`b`, `best.json`), and exporting the sheet as a PNG (`e`,
the same picture as `tunelab grid`). Cells a resume rendered later are counted in the bar and explained
in the status line (`↻ rendered on resume …, with steps 30 (column: 20)`).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static

from engine.contact_sheet import Sheet, column_label, differs_text, load_sheet, read_best, write_best, write_sheet
from engine.rundir import RunDir, list_runs, parse_checkpoint_name
from tui.actions import bindings
from tui.widgets.contact_grid import LATER_MARK, ContactGrid


def _signature(sheet: Sheet | None) -> Any:
    if sheet is None:
        return None
    return (tuple(c.name for c in sheet.columns), tuple((p.index, p.text, p.kind) for p in sheet.rows),
            tuple(sheet.seeds), sheet.seed, tuple(sorted((k, tuple(sorted(v))) for k, v in sheet.files.items())))


class ComparePane(Vertical):
    ACTION_SCOPE = "compare"
    BINDINGS = bindings("compare")
    DEFAULT_CSS = """
    ComparePane { height: 1fr; }
    ComparePane #compare-bar { height: 1; padding: 0 1; background: $boost; }
    ComparePane #compare-status { height: 1; padding: 0 1; color: $text-muted; }
    """

    class SheetLoaded(Message):
        def __init__(self, run_id: str | None, runs: list[str], sheet: Sheet | None, best: str | None,
                     asked: tuple[str | None, int | None] = (None, None)) -> None:
            super().__init__()
            self.run_id, self.runs, self.sheet, self.best = run_id, runs, sheet, best
            self.asked = asked  # the (run, seed) the poll was for: a poll for an earlier choice is stale

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, ComparePane.SheetLoaded)

    class Done(Message):
        def __init__(self, message: str, ok: bool = True, severity: str | None = None) -> None:
            super().__init__()
            self.message, self.ok = message, ok
            self.severity = severity or ("information" if ok else "error")

    def __init__(self, project_dir: str | Path, *, poll: float = 1.0, run_id: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.project_dir = Path(project_dir)
        self.poll_seconds = poll
        self.run_id = run_id
        self.seed: int | None = None
        self.runs: list[str] = []
        self.sheet: Sheet | None = None
        self.best: str | None = None
        self._signature: Any = None
        self._runs_selection: str | None = None  # the Runs tab's selection when this tab last showed

    @property
    def mode(self) -> str:
        mode = getattr(self.app, "image_mode", "halfblock")
        return mode if mode in ("halfblock", "kitty", "sixel", "none") else "halfblock"

    def compose(self) -> ComposeResult:
        yield Static("", id="compare-bar")
        yield ContactGrid(self.mode, id="compare-grid")
        yield Static("", id="compare-status")

    def on_mount(self) -> None:
        self.poll_now()
        if self.poll_seconds > 0:
            self.set_interval(self.poll_seconds, self.poll_now)

    def on_show(self) -> None:
        """Shown (its tab chosen): show the run selected in the Runs tab (when that selection changed since
        the last visit, so a run picked here with `R` stays), and put the keys on the grid, so arrows,
        zoom and `b` answer at once."""
        from tui.widgets.runs_pane import RunsPane

        for pane in self.screen.query(RunsPane):
            selected = pane.selected_run()
            chosen = selected.run_id if selected is not None else None
            if chosen is not None and chosen != self._runs_selection:
                self._runs_selection = chosen
                if chosen != self.run_id:
                    self.run_id, self.seed = chosen, None
                    self.poll_now()
        focused = self.screen.focused if self.is_attached else None
        if focused is None or self not in focused.ancestors_with_self:
            self.query_one(ContactGrid).focus()

    # --- polling --------------------------------------------------------------------------------
    def poll_now(self) -> None:
        self._poll(self.run_id, self.seed)

    @work(thread=True, exclusive=True, group="compare-poll", exit_on_error=False)
    def _poll(self, run_id: str | None, seed: int | None) -> None:
        asked = (run_id, seed)
        runs = list_runs(self.project_dir)
        ids = [r.run_id for r in runs]
        if run_id not in ids:
            # Default: the newest run that has samples, else the newest run.
            with_samples = [r for r in runs if r.sample_columns()]
            run_id = (with_samples or runs or [None])[0]
            run_id = run_id.run_id if run_id is not None else None
        if run_id is None:
            self.post_message(self.SheetLoaded(None, ids, None, None, asked))
            return
        run = RunDir(self.project_dir / "runs" / run_id)
        sheet = load_sheet(run, seed)
        sheet.later_cells()  # worked out here, off the UI thread (the sheet caches it)
        best = (read_best(run) or {}).get("checkpoint")
        self.post_message(self.SheetLoaded(run_id, ids, sheet, best, asked))

    @on(SheetLoaded)
    def _loaded(self, event: SheetLoaded) -> None:
        if event.asked != (self.run_id, self.seed):
            return  # the user chose another run or seed while this poll ran
        runs_changed = event.runs != self.runs
        self.runs = event.runs
        sig = (_signature(event.sheet), event.best, event.run_id)
        self.run_id = event.run_id
        if sig == self._signature:
            if runs_changed:
                self._update_bar()  # "(1/2, R: next)" when a second run appears
            return
        self._signature = sig
        self.sheet, self.best = event.sheet, event.best
        if event.sheet is not None:
            self.seed = event.sheet.seed
        self.query_one(ContactGrid).set_sheet(event.sheet, event.best)
        self._update_bar()
        self._update_status()

    def _update_bar(self) -> None:
        t = Text()
        if self.run_id is None:
            t.append("No runs yet.", style="dim")
        else:
            t.append("run ", style="dim")
            t.append(self.run_id, style="bold")
            if len(self.runs) > 1:
                t.append(f"  ({self.runs.index(self.run_id) + 1}/{len(self.runs)}, R: next)", style="dim")
            sheet = self.sheet
            if sheet is not None:
                t.append("   seed ", style="dim")
                t.append(str(sheet.seed), style="bold")
                if len(sheet.seeds) > 1 and sheet.seed in sheet.seeds:
                    t.append(f"  ({sheet.seeds.index(sheet.seed) + 1}/{len(sheet.seeds)}, s: next)", style="dim")
                t.append(f"   {sheet.shape()}", style="dim")
                later = sheet.later_cells()
                if later:
                    differ = sum(1 for render in later.values() if render.differs)
                    t.append(f"   {LATER_MARK} {len(later)} rendered on resume"
                             + (f" ({differ} with other settings)" if differ else ""), style="cyan")
            if self.best:
                parsed = parse_checkpoint_name(self.best)
                t.append(f"   best ★ {column_label(*parsed) if parsed else self.best}", style="yellow")
        self.query_one("#compare-bar", Static).update(t)

    def _update_status(self) -> None:
        grid = self.query_one(ContactGrid)
        sheet = self.sheet
        if sheet is None or not sheet.rows or not sheet.columns:
            self.query_one("#compare-status", Static).update("")
            return
        r, c = grid.cursor
        col = sheet.columns[c]
        path = sheet.cell_path(r, c)
        t = Text(f"{sheet.rows[r].kind} · {col.label} · ", style="dim")
        t.append(sheet.rows[r].text)
        if path is None:
            t.append("  (not sampled yet)", style="italic dim")
        render = sheet.later_cells().get((r, c))
        if render is not None:  # first: the line is cut at the edge, and the prompt is in the grid too
            note = f"with {differs_text(render.differs)}" if render.differs else "with its column's settings"
            t = Text(f"{LATER_MARK} rendered on resume, {note} · ", style="cyan") + t
        self.query_one("#compare-status", Static).update(t)

    @on(ContactGrid.CursorMoved)
    def _cursor(self, event: ContactGrid.CursorMoved) -> None:
        self._update_status()

    # --- actions ----------------------------------------------------------------------------------
    def _cursor_cell(self) -> tuple[int, int] | None:
        if self.sheet is None or not self.sheet.rows or not self.sheet.columns:
            self.notify("No samples to act on yet.", severity="warning")
            return None
        return self.query_one(ContactGrid).cursor

    def action_zoom(self) -> None:
        cell = self._cursor_cell()
        if cell is None or self.sheet is None:
            return
        from tui.screens.zoom import ZoomScreen

        grid = self.query_one(ContactGrid)

        def closed(col: int | None) -> None:
            if col is not None:
                grid.cursor = (grid.cursor[0], col)

        self.app.push_screen(ZoomScreen(self.sheet, cell[0], cell[1], self.mode, on_best=self.mark_best), closed)

    def action_mark_best(self) -> None:
        cell = self._cursor_cell()
        if cell is not None:
            self.mark_best(cell[1])

    def mark_best(self, col: int) -> None:
        if self.sheet is None or self.run_id is None:
            return
        column = self.sheet.columns[col]
        if column.epoch == 0:
            self.notify("Epoch 0 is the base model, not a checkpoint of this run.", severity="warning")
            return
        try:
            write_best(self.sheet.run_dir, column.name, now=_now(self),
                       seed=self.sheet.seed)
        except OSError as e:
            self.notify(f"Could not write best.json: {e}", severity="error")
            return
        self.best = column.name
        self._signature = None
        self.query_one(ContactGrid).set_sheet(self.sheet, self.best)
        self._update_bar()
        self.notify(f"Marked {column.label} ({column.name}) as the best checkpoint.")

    def action_export(self) -> None:
        if self.sheet is None or self.run_id is None:
            self.notify("No run to export.", severity="warning")
            return
        run = self.sheet.run_dir
        seed = self.sheet.seed
        out = run.path / (f"contact-sheet-s{seed}.png" if len(self.sheet.seeds) > 1 else "contact-sheet.png")
        self._export(run, out, seed)

    @work(thread=True, group="compare-export", exit_on_error=False)
    def _export(self, run: RunDir, out: Path, seed: int | None) -> None:
        """Write the PNG; a run with no sample images gets nothing written and `tunelab grid`'s reason
        (an empty PNG told nothing)."""
        from tui.commands.grid import _why_no_samples

        try:
            if not load_sheet(run, seed).columns:
                self.post_message(self.Done(f"{run.run_id} has no sample images: {_why_no_samples(run.path)}; "
                                            "nothing written", ok=False, severity="warning"))
                return
            written, _ = write_sheet(run, out, seed=seed)
        except OSError as e:
            self.post_message(self.Done(f"Export failed: {e}", ok=False))
            return
        self.post_message(self.Done(f"Contact sheet written to {written}"))

    @on(Done)
    def _done(self, event: Done) -> None:
        self.notify(event.message, severity=event.severity)

    def action_next_seed(self) -> None:
        if self.sheet is None or len(self.sheet.seeds) < 2:
            self.notify("This run samples one seed.")
            return
        seeds = self.sheet.seeds
        self.seed = seeds[(seeds.index(self.sheet.seed) + 1) % len(seeds)] if self.sheet.seed in seeds else seeds[0]
        self.poll_now()

    def action_next_run(self) -> None:
        if len(self.runs) < 2:
            self.notify("This project has one run." if self.runs else "No runs yet.")
            return
        i = self.runs.index(self.run_id) if self.run_id in self.runs else -1
        self.run_id = self.runs[(i + 1) % len(self.runs)]
        self.seed = None
        self.poll_now()

    def action_page(self, direction: int) -> None:
        self.query_one(ContactGrid).page_rows(direction)


def _now(node: Any) -> float:
    clock = getattr(node.app, "clock", None)
    return float(clock()) if callable(clock) else time.time()
