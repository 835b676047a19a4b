"""The Runs tab: the project's runs as a live table, and the actions on them.

A thread worker polls the run directories once a second (`engine.runinfo.RunWatcher` per run, which
tails `events.jsonl` by byte offset, so a refresh reads only what was appended) and posts one `Polled`
message; the handler updates the table in place. Every action that touches processes or files
(launch, stop, resume, delete) runs in a worker too and reports back through `ActionDone`, shown as a
notification or, for a failed check, a modal with the check's output.

The table shows the state as the run dir says it (`lost`: status says alive but no supervisor holds the
lock; a stopping run's escalation countdown, `tui.widgets.run_state`), progress, epoch, last and smoothed loss, img/s, ETA, elapsed, cost so far and the checkpoint
marked best on the contact sheet (`best.json`).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Label, OptionList, Static

from engine.launch import FORCE_KILL_AFTER_S
from engine.rundir import ALIVE_STATES, RunDir, list_runs, parse_checkpoint_name
from engine.runinfo import RunSummary, RunWatcher, fmt_cost, fmt_duration, fmt_progress, fmt_started, fmt_time
from tui.actions import bindings, effective_keys, in_scope, key_display
from tui.widgets.loss_plot import SMOOTHING, Ema
from tui.widgets.run_state import EscalationReader, StopEscalation, escalation_note, escalation_tag, state_cell

POLL_SECONDS = 1.0



def now_for(node: Any) -> float:
    """The app's clock (`app.clock`, injectable for deterministic snapshots), else the wall clock."""
    try:
        clock = getattr(node.app, "clock", None)
    except Exception:  # noqa: BLE001 - no app (unit tests of helpers)
        clock = None
    return float(clock()) if callable(clock) else time.time()


def progress_bar(fraction: float | None, width: int = 12) -> Text:
    if fraction is None:
        return Text("·" * width, style="dim")
    fraction = max(0.0, min(1.0, fraction))
    full = int(round(fraction * width))
    bar = Text("█" * full, style="green")
    bar.append("░" * (width - full), style="dim")
    bar.append(f" {fraction * 100:3.0f}%")
    return bar


def summary_fraction(s: RunSummary) -> float | None:
    if s.state == "finished":
        return 1.0
    if s.step is not None and s.total_steps:
        return s.step / s.total_steps
    if s.epoch is not None and s.epochs:
        return s.epoch / s.epochs
    return None


def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


@dataclass
class RunRow:
    summary: RunSummary
    smoothed: float | None
    best: str | None
    escalation: StopEscalation | None = None  # status.json's stop deadline and the signals sent
    now: float = 0.0  # the poll's clock, for the stop countdown

    @property
    def has_stop_tag(self) -> bool:
        """The state cell says what the supervisor does next (`stopping · TERM in 9m`)."""
        return bool(escalation_tag(self.summary.state, self.escalation, self.now))


COLUMNS = ("run", "state", "progress", "epoch", "loss", "smoothed", "img/s", "ETA", "elapsed", "cost", "best")
# On a narrow terminal these go first, in this order: cost and best only while no run has a value,
# then the smoothed loss, img/s and elapsed time (the monitor shows all of them).
DROPPABLE_IF_EMPTY = ("cost", "best")
DROPPABLE = ("smoothed", "img/s", "elapsed")
BAR_MIN, BAR_MAX = 4, 20
PERCENT_W = 5  # " 100%" after the bar
CELL_PAD = 2  # DataTable's cell_padding (1) on each side of a column
SCROLLBAR_W = 2


def best_label(best: str | None) -> str:
    if not best:
        return ""
    parsed = parse_checkpoint_name(best)
    return f"★ e{parsed[0]}" if parsed else f"★ {best}"


def row_cells(row: RunRow, bar: int = 12, two_lines: bool = False) -> dict[str, Any]:
    """The table's cells of one run, by column name (`two_lines`: a stop's countdown under the state)."""
    s = row.summary
    return {
        "run": s.run_id,
        "state": state_cell(s.state, row.escalation, row.now, two_lines),
        "progress": progress_bar(summary_fraction(s), bar),
        "epoch": fmt_progress(s),
        "loss": _num(s.loss, ".4f"),
        "smoothed": _num(row.smoothed, ".4f"),
        "img/s": _num(s.img_s, ".1f"),
        "ETA": fmt_duration(s.eta_s) if s.alive else "-",
        "elapsed": fmt_duration(s.elapsed_s),
        "cost": fmt_cost(s),
        "best": Text(best_label(row.best), style="yellow"),
    }


def details_text(s: RunSummary, escalation: StopEscalation | None = None) -> Text:
    from tui.screens.monitor import notes

    t = Text()
    t.append(s.run_id, style="bold")
    if s.method:
        t.append(f"  {s.method}", style="cyan")
    if s.description:
        t.append(f" — {s.description}", style="italic")
    t.append("\n")
    facts = [("started", fmt_started(s))]
    if s.ended:
        facts.append(("ended", fmt_time(s.ended)))
    last = parse_checkpoint_name(s.last_checkpoint) if s.last_checkpoint else None
    facts.append(("checkpoints", f"{s.checkpoints}" + (f" (last epoch {last[0]})" if last else "")))
    facts.append(("sample columns", str(s.sample_columns)))
    if s.cost_per_epoch:
        facts.append(("per epoch", fmt_cost(s, s.cost_per_epoch)))
    if s.phase:
        facts.append(("phase", s.phase))
    for i, (label, value) in enumerate(facts):
        t.append(("   " if i else "") + label + " ", style="dim")
        t.append(value)
    for label, message, style in notes(s, escalation):
        t.append(f"\n{label} ", style=f"{style} bold")
        t.append(message, style=style)
    signals = escalation_note(escalation)
    if signals and not s.alive:  # a live run's stop note says it
        t.append("\nsupervisor sent: ", style="red bold")
        t.append(signals + " (the trainer had not exited in time)", style="red")
    if s.state == "lost":
        t.append("\nlost: ", style="red bold")
        t.append("no supervisor holds the run's lock (killed, or the machine rebooted); K settles it, "
                 "then r resumes from the last checkpoint", style="red")
    return t


def _cell_width(value: Any) -> int:
    text = value if isinstance(value, Text) else Text(str(value))
    return max(line.cell_len for line in text.split("\n"))


def column_widths(rows: list[RunRow], two_lines: bool = False) -> dict[str, int]:
    """Each column's width: its widest value or its header (the progress column's at bar width 0)."""
    widths = {c: Text(c).cell_len for c in COLUMNS}
    for row in rows:
        for c, value in row_cells(row, 0, two_lines).items():
            widths[c] = max(widths[c], _cell_width(value))
    return widths


def empty_columns(rows: list[RunRow]) -> set[str]:
    """Droppable columns no run has a value in."""
    cells = [row_cells(r, 0) for r in rows]
    return {c for c in DROPPABLE_IF_EMPTY if all(str(r[c]) in ("", "-") for r in cells)}


@dataclass(frozen=True)
class TableLayout:
    """Which columns the table shows, how wide the progress bar is, and whether a stopping run's
    countdown goes on a second line of its row (`two_lines`) instead of widening the state column."""

    columns: tuple[str, ...]
    bar: int
    two_lines: bool = False

    def width(self, rows: list[RunRow], widths: dict[str, int] | None = None) -> int:
        """Cells the table needs for `rows` (every column as wide as its widest value)."""
        widths = widths or column_widths(rows, self.two_lines)
        return sum((max(widths[c], self.bar + PERCENT_W) if c == "progress" else widths[c]) + CELL_PAD
                   for c in self.columns)

    def row_height(self, row: RunRow) -> int:
        return 2 if self.two_lines and row.has_stop_tag else 1


def plan_layout(width: int, rows: list[RunRow], widths: dict[str, int] | None = None) -> TableLayout:
    """The columns and bar width that fit `width` terminal cells: every value whole (never cut), the bar
    as long as the room left allows; then a stopping run's countdown under its state (two-line row);
    columns dropped only when even that and a short bar do not fit. With no way to fit, the table
    scrolls sideways (DataTable does that by itself). `widths`: the one-line cells' (column_widths)."""
    room = max(0, width - SCROLLBAR_W)
    empty = empty_columns(rows)
    wrap = any(row.has_stop_tag for row in rows)
    one_line = widths or column_widths(rows)
    by_wrap = {False: one_line, True: column_widths(rows, two_lines=True) if wrap else one_line}
    candidates = [(COLUMNS, False)] + ([(COLUMNS, True)] if wrap else [])
    dropped: list[str] = []
    for c in [c for c in DROPPABLE_IF_EMPTY if c in empty] + list(DROPPABLE):
        dropped.append(c)
        candidates.append((tuple(x for x in COLUMNS if x not in dropped), wrap))
    for columns, two_lines in candidates:
        widths = by_wrap[two_lines]
        others = sum(widths[c] + CELL_PAD for c in columns if c != "progress")
        bar = min(BAR_MAX, room - others - CELL_PAD - PERCENT_W)
        if bar >= BAR_MIN:
            return TableLayout(columns, bar, two_lines)
    return TableLayout(candidates[-1][0], BAR_MIN, wrap)


# --- modals --------------------------------------------------------------------------------------

class ConfirmModal(ModalScreen[bool]):
    """Yes/no, with the question in words; `y`/`enter` confirm, `n`/`escape` cancel."""

    DEFAULT_CSS = """
    ConfirmModal { align: center middle; }
    ConfirmModal > Vertical { width: 64; height: auto; border: thick $warning; background: $surface; padding: 1 2; }
    ConfirmModal Horizontal { height: auto; margin-top: 1; align-horizontal: right; }
    ConfirmModal Button { margin-left: 2; }
    ConfirmModal .question { width: 100%; }
    """
    BINDINGS = [Binding("y", "answer(True)", "Yes"), Binding("n,escape", "answer(False)", "No")]

    def __init__(self, question: str, yes: str = "Yes") -> None:
        super().__init__()
        self.question, self.yes = question, yes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, classes="question")
            with Horizontal():
                yield Button(self.yes, variant="error", id="yes")
                yield Button("Cancel", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, value: bool) -> None:
        self.dismiss(value)


class ProblemsModal(ModalScreen[None]):
    """A block of text (a failed check's output, an error) to read and dismiss."""

    DEFAULT_CSS = """
    ProblemsModal { align: center middle; }
    ProblemsModal > Vertical { width: 90%; height: 80%; border: thick $error; background: $surface; padding: 0 1; }
    ProblemsModal VerticalScroll { height: 1fr; }
    ProblemsModal #title { text-style: bold; color: $error; padding: 1 0; }
    """
    BINDINGS = [Binding("escape,enter,q", "dismiss_modal", "Close")]

    def __init__(self, title: str, body: str) -> None:
        super().__init__()
        self.title_text, self.body = title, body

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self.title_text, id="title")
            with VerticalScroll():
                yield Static(Text(self.body), id="body")
            yield Label("esc closes", classes="hint")

    def action_dismiss_modal(self) -> None:
        self.dismiss(None)


def picker_keys(keymap: dict[str, str] | None = None) -> str:
    """The picker's keys as one line (a modal has no footer): `↑ / ↓ choose · enter launch · esc cancel`."""
    return " · ".join(f"{key_display(effective_keys(a, keymap))} {a.description.lower()}" for a in in_scope("picker"))


class ConfigPicker(ModalScreen[str | None]):
    """Pick a run config from the project's `configs/`."""

    DEFAULT_CSS = """
    ConfigPicker { align: center middle; }
    ConfigPicker > Vertical { width: 60; height: auto; max-height: 80%; border: thick $primary; background: $surface; padding: 0 1; }
    ConfigPicker OptionList { height: auto; max-height: 20; }
    ConfigPicker #picker-keys { color: $text-muted; }
    """
    ACTION_SCOPE = "picker"
    BINDINGS = bindings("picker")

    def __init__(self, names: list[str], about: dict[str, str] | None = None) -> None:
        super().__init__()
        self.names = names
        self.about = about or {}  # name -> "method · description"

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label("Launch which config? (the check runs first)")
            options = []
            for name in self.names:
                text = Text(name, style="bold")
                if self.about.get(name):
                    text.append(f"  {self.about[name]}", style="dim")
                options.append(text)
            yield OptionList(*options, id="configs")
            yield Static(picker_keys(getattr(self.app, "_keymap", None)), id="picker-keys", markup=False)

    @on(OptionList.OptionSelected)
    def _chosen(self, event: OptionList.OptionSelected) -> None:
        self.dismiss(self.names[event.option_index])

    def action_cancel(self) -> None:
        self.dismiss(None)


# --- the pane ------------------------------------------------------------------------------------

class RunsPane(Vertical):
    """The project's runs; see the module docstring. Mounted by the project screen's Runs tab."""

    ACTION_SCOPE = "runs"
    BINDINGS = bindings("runs")
    DEFAULT_CSS = """
    RunsPane { height: 1fr; }
    RunsPane DataTable { height: 1fr; }
    RunsPane #runs-empty { padding: 1 2; color: $text-muted; }
    RunsPane #runs-empty.hidden { display: none; }
    RunsPane #run-details { height: auto; padding: 0 1; border-top: solid $primary 40%; }
    RunsPane #run-details.hidden { display: none; }
    """

    class Polled(Message):
        def __init__(self, rows: list[RunRow]) -> None:
            super().__init__()
            self.rows = rows

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, RunsPane.Polled)

    class ActionDone(Message):
        """A launch/stop/resume/delete finished (ok or not); `detail` is long text for a modal."""

        def __init__(self, message: str, ok: bool = True, detail: str = "", title: str = "") -> None:
            super().__init__()
            self.message, self.ok, self.detail, self.title = message, ok, detail, title

    def __init__(self, project_dir: str | Path, *, poll: float = POLL_SECONDS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.project_dir = Path(project_dir)
        self.poll_seconds = poll
        self.rows: dict[str, RunRow] = {}
        self._watchers: dict[str, RunWatcher] = {}
        self._smoothed: dict[str, Ema] = {}
        self._layout: TableLayout | None = None
        self._escalations: dict[str, EscalationReader] = {}

    def compose(self) -> ComposeResult:
        yield DataTable(id="runs-table", cursor_type="row", zebra_stripes=True)
        yield Static("No runs yet. Press n to launch a config.", id="runs-empty")
        yield Static("", id="run-details", classes="hidden")

    def on_mount(self) -> None:
        self.poll_now()
        if self.poll_seconds > 0:
            self.set_interval(self.poll_seconds, self.poll_now)

    def on_show(self) -> None:
        """Shown (its tab chosen): put the keys on the table, so the run actions answer at once."""
        focused = self.screen.focused if self.is_attached else None
        if focused is None or self not in focused.ancestors_with_self:
            self.query_one(DataTable).focus()

    # --- polling -------------------------------------------------------------------------------
    def poll_now(self) -> None:
        self._poll(now_for(self))

    @work(thread=True, exclusive=True, group="runs-poll", exit_on_error=False)
    def _poll(self, now: float) -> None:
        rows = []
        seen = set()
        for run in list_runs(self.project_dir):
            seen.add(run.run_id)
            watcher = self._watchers.get(run.run_id)
            if watcher is None:
                watcher = self._watchers[run.run_id] = RunWatcher(run)
            summary = watcher.refresh(now)
            ema = self._smoothed.get(run.run_id)
            for ev in watcher.new_events:
                loss = ev.get("loss")
                if ev.get("kind") == "progress" and isinstance(loss, (int, float)):
                    if ema is None:
                        ema = self._smoothed[run.run_id] = Ema(SMOOTHING)
                    ema.add(float(loss))
            rows.append(RunRow(summary, ema.value if ema else None, read_best_name(run),
                               self._escalation(run), now))
        for gone in set(self._watchers) - seen:
            self._watchers.pop(gone, None)
            self._smoothed.pop(gone, None)
            self._escalations.pop(gone, None)
        self.post_message(self.Polled(rows))

    def _escalation(self, run: RunDir) -> StopEscalation | None:
        reader = self._escalations.get(run.run_id)
        if reader is None:
            reader = self._escalations[run.run_id] = EscalationReader(run)
        return reader.read()

    @on(Polled)
    def _show(self, event: Polled) -> None:
        new = {r.summary.run_id: r for r in event.rows}
        self.rows = new
        self._fit_table()
        self.query_one("#runs-empty").set_class(bool(new), "hidden")
        self._show_details()

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_details()

    def _show_details(self) -> None:
        """The selected run beyond the table's numbers: what it is, when, its checkpoints, and why it
        stopped or failed (what `tunelab status RUN` prints)."""
        box = self.query_one("#run-details", Static)
        run = self.selected_run()
        row = self.rows.get(run.run_id) if run is not None else None
        box.set_class(row is None, "hidden")
        if row is not None:
            box.update(details_text(row.summary, row.escalation))

    def on_resize(self) -> None:
        self._fit_table(resized=True)

    def _fit_table(self, resized: bool = False) -> None:
        """Show `self.rows`, re-planning the columns when they no longer fit (or, after a resize, when
        a different plan fits better); otherwise update the cells in place."""
        table = self.query_one(DataTable)
        rows = list(self.rows.values())
        width = self.size.width or self.app.size.width
        layout = self._layout
        planned = plan_layout(width, rows)
        if layout is None or resized or layout.width(rows) > width - SCROLLBAR_W \
                or set(layout.columns) != set(planned.columns) or layout.two_lines != planned.two_lines:
            if planned != layout:
                self._rebuild(table, planned)
                return
        assert self._layout is not None
        for run_id in [str(k.value) for k in table.rows]:
            if run_id not in self.rows:
                table.remove_row(run_id)
        if any(run_id in table.rows and table.rows[run_id].height != self._layout.row_height(row)
               for run_id, row in self.rows.items()):
            self._rebuild(table, self._layout)  # a run began or ended a two-line stop countdown
            return
        for run_id, row in self.rows.items():
            cells = row_cells(row, self._layout.bar, self._layout.two_lines)
            if run_id in table.rows:
                for name in self._layout.columns:
                    # update_width: a value that grew ("0/120" → "30/120") widens its column, never cut.
                    table.update_cell(run_id, name, cells[name], update_width=True)
            else:
                table.add_row(*[cells[c] for c in self._layout.columns], key=run_id,
                              height=self._layout.row_height(row))
        if [str(k.value) for k in table.rows] != list(self.rows):  # newest first, as list_runs gives them
            table.sort("run", reverse=True)

    def _rebuild(self, table: DataTable, layout: TableLayout) -> None:
        """New columns: clear the table and add every row again, keeping the cursor on its run."""
        selected = self.selected_run()
        self._layout = layout
        table.clear(columns=True)
        for name in layout.columns:
            table.add_column(name, key=name)
        for run_id, row in self.rows.items():
            cells = row_cells(row, layout.bar, layout.two_lines)
            table.add_row(*[cells[c] for c in layout.columns], key=run_id, height=layout.row_height(row))
        if selected is not None and selected.run_id in self.rows:
            table.move_cursor(row=list(self.rows).index(selected.run_id), animate=False)

    # --- selection -------------------------------------------------------------------------------
    def selected_run(self) -> RunDir | None:
        table = self.query_one(DataTable)
        if not self.rows or table.cursor_row < 0 or table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key((table.cursor_row, 0)).row_key.value
        return RunDir(self.project_dir / "runs" / str(key)) if key else None

    def _selected_or_say(self) -> RunDir | None:
        run = self.selected_run()
        if run is None:
            self.notify("No run selected.", severity="warning")
        return run

    # --- actions ---------------------------------------------------------------------------------
    def action_open_monitor(self) -> None:
        run = self._selected_or_say()
        if run is not None:
            from tui.screens.monitor import MonitorScreen

            self.app.push_screen(MonitorScreen(run))

    @on(DataTable.RowSelected)
    def _row_chosen(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_open_monitor()

    def action_launch(self) -> None:
        self._list_configs()

    @work(thread=True, exclusive=True, group="runs-configs", exit_on_error=False)
    def _list_configs(self) -> None:
        """The project's configs with their method and description (read off the UI thread)."""
        import tomllib

        names, about = [], {}
        for path in sorted((self.project_dir / "configs").glob("*.toml")):
            names.append(path.stem)
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8", errors="replace"))
            except (OSError, tomllib.TOMLDecodeError):
                about[path.stem] = "(not valid TOML: the check will say where)"
                continue
            words = [str(data.get("method", "lora"))]
            if data.get("description"):
                words.append(str(data["description"]))
            about[path.stem] = " · ".join(words)
        self.app.call_from_thread(self._pick_config, names, about)

    def _pick_config(self, names: list[str], about: dict[str, str]) -> None:
        if not names:
            self.notify(f"No configs in {self.project_dir / 'configs'}; create one in the Configs tab.",
                        severity="warning")
            return

        def chosen(name: str | None) -> None:
            if name:
                self.notify(f"Checking {name}…")
                self._launch(name)

        self.app.push_screen(ConfigPicker(names, about), chosen)

    @work(thread=True, group="runs-action", exit_on_error=False)
    def _launch(self, config: str) -> None:
        from engine import launch

        env = dict(os.environ)
        launch._add_source_root(env)
        check = subprocess.run(
            [sys.executable, "-m", "tui.cli", "check", str(self.project_dir), config],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, env=env, timeout=300,
        )
        if check.returncode != 0:
            self.post_message(self.ActionDone(f"{config}: the check failed; nothing was launched", ok=False,
                                              detail=(check.stdout + check.stderr).strip(),
                                              title=f"tunelab check {self.project_dir.name} {config}"))
            return
        try:
            run = launch.create_run(self.project_dir, config)
            launch.start_supervisor(run)
        except Exception as e:  # noqa: BLE001 - ConfigError, LaunchError, OSError: all shown the same way
            self.post_message(self.ActionDone(f"{config}: launch failed", ok=False, detail=str(e),
                                              title="Launch failed"))
            return
        self.post_message(self.ActionDone(f"Launched {run.run_id}"))

    def action_stop(self) -> None:
        run = self._selected_or_say()
        if run is not None:
            self._stop(run, force=False)

    def action_force_stop(self) -> None:
        run = self._selected_or_say()
        if run is None:
            return
        state = self.rows[run.run_id].summary.state if run.run_id in self.rows else run.state()
        if state not in ALIVE_STATES and state != "lost":
            self.notify(f"{run.run_id} is {state}; nothing to stop.")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._stop(run, force=True)

        self.app.push_screen(ConfirmModal(
            f"Force stop {run.run_id}?\n\nIts processes get SIGTERM now and SIGKILL "
            f"{FORCE_KILL_AFTER_S:g} s later. On SIGTERM the trainer saves a checkpoint (without samples) "
            f"if it can in that time; what it trained since its last complete checkpoint may be lost.",
            yes="Force stop"), answered)

    @work(thread=True, group="runs-action", exit_on_error=False)
    def _stop(self, run: RunDir, force: bool) -> None:
        from engine.launch import stop_run

        try:
            if force:
                state = stop_run(run, force=True, timeout=20.0, kill_after=FORCE_KILL_AFTER_S)
                self.post_message(self.ActionDone(f"{run.run_id}: {state}"))
            else:
                state = stop_run(run, force=False, timeout=0.0)  # the poll shows it end
                msg = f"{run.run_id}: stop requested (a checkpoint is saved first)" \
                    if state in ALIVE_STATES else f"{run.run_id}: {state}"
                if state == "lost":
                    msg = f"{run.run_id} is lost (no supervisor); force stop (K) settles it"
                self.post_message(self.ActionDone(msg, ok=state != "lost"))
        except Exception as e:  # noqa: BLE001
            self.post_message(self.ActionDone(f"{run.run_id}: stop failed: {e}", ok=False))
        self.call_from_thread(self.poll_now)

    def action_resume(self) -> None:
        """A finished run, or one its time budget stopped, would end again at once: a small dialog asks
        for more epochs or hours first (`tunelab resume --set`); any other run resumes as it is."""
        run = self._selected_or_say()
        if run is None:
            return
        summary = self.rows[run.run_id].summary if run.run_id in self.rows else None
        budget = summary is not None and summary.state == "stopped" and (summary.stop_reason or "").startswith("budget")
        if summary is None or not (summary.state == "finished" or budget) or not summary.epochs:
            self._resume(run, [])
            return
        from tui.screens.resume_changes import ResumeChangesScreen

        def answered(overrides: list[str] | None) -> None:
            if overrides:
                self._resume(run, overrides)

        self.app.push_screen(ResumeChangesScreen(run.run_id, why="finished" if summary.state == "finished" else "budget",
                                                 epochs=summary.epochs, max_hours=summary.max_hours or 0.0), answered)

    @work(thread=True, group="runs-action", exit_on_error=False)
    def _resume(self, run: RunDir, overrides: list[str]) -> None:
        from engine.resume import describe_changes, resume_with_changes

        try:
            _pid, plan = resume_with_changes(run, overrides)
        except Exception as e:  # noqa: BLE001 - LaunchError/ConfigError say why (alive, finished, a bad value)
            self.post_message(self.ActionDone(f"Cannot resume: {e}", ok=False))
            return
        from engine.launch import goals_note

        changed = f" ({describe_changes(plan.changes)})" if plan is not None and plan.changes else ""
        note = goals_note(run, overrides)
        self.post_message(self.ActionDone(f"Resumed {run.run_id}{changed}" + (f". Note: {note}" if note else "")))
        self.call_from_thread(self.poll_now)

    def action_delete(self) -> None:
        run = self._selected_or_say()
        if run is None:
            return
        state = run.state()
        if state in ALIVE_STATES or state == "lost":
            self.notify(f"{run.run_id} is {state}: stop it first (a lost run: force stop).", severity="error")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._delete(run)

        self.app.push_screen(ConfirmModal(
            f"Delete run {run.run_id}?\n\nIts checkpoints, samples and log are removed from disk.",
            yes="Delete"), answered)

    @work(thread=True, group="runs-action", exit_on_error=False)
    def _delete(self, run: RunDir) -> None:
        if run.state() in ALIVE_STATES:  # it may have been resumed meanwhile
            self.post_message(self.ActionDone(f"{run.run_id} is alive again; not deleted", ok=False))
            return
        # Rename first, so no reader ever sees a half-deleted run under its id.
        trash = run.path.with_name(f".deleting-{run.run_id}")
        try:
            os.rename(run.path, trash)
            shutil.rmtree(trash)
        except OSError as e:
            self.post_message(self.ActionDone(f"Could not delete {run.run_id}: {e}", ok=False))
            return
        self.post_message(self.ActionDone(f"Deleted {run.run_id}"))
        self.call_from_thread(self.poll_now)

    @on(ActionDone)
    def _done(self, event: ActionDone) -> None:
        if event.detail and not event.ok:
            self.app.push_screen(ProblemsModal(event.title or event.message, event.detail))
        self.notify(event.message, severity="information" if event.ok else "error")
        self.poll_now()


def read_best_name(run: RunDir) -> str | None:
    from engine.contact_sheet import read_best

    best = read_best(run)
    name = (best or {}).get("checkpoint")
    return str(name) if name else None
