"""The monitor of one run: its log, its training curves, its GPUs and what it costs, live.

Everything comes from the run directory: `train.log` through `LogView`, `events.jsonl` through an
incremental `RunWatcher` polled by a thread worker (new events only, by byte offset), NVML through
`GpuPanel`. Actions write control requests (`RunDir.request`): sample now, save now, stop; the trainer
picks them up at its next step. The screen can be closed and opened again at any time, from any TUI.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Static

from engine.rundir import ALIVE_STATES, RunDir, parse_checkpoint_name
from engine.runinfo import RunSummary, RunWatcher, fmt_cost, fmt_duration, fmt_progress, fmt_stop_reason
from tui.actions import bindings
from tui.widgets.gpu_panel import GpuPanel
from tui.widgets.key_footer import KeyFooter
from tui.widgets.log_view import LogView
from tui.widgets.loss_plot import LossPlot, TrainingHistory
from tui.widgets.run_state import EscalationReader, StopEscalation, escalation_note, state_cell
from tui.widgets.runs_pane import now_for, progress_bar, summary_fraction


def stats_items(s: RunSummary, history: TrainingHistory) -> list[tuple[str, str]]:
    """The run's numbers as (label, value) pairs, in reading order."""
    items = [("epoch", fmt_progress(s)),
             ("step", "-" if s.step is None else (f"{s.step}/{s.total_steps}" if s.total_steps else str(s.step))),
             ("loss", "-" if s.loss is None else f"{s.loss:.4f}")]
    if history.smoothed:
        items.append(("smoothed", f"{history.smoothed[-1]:.4f}"))
    if history.val_loss:
        items.append(("val loss", f"{history.val_loss[-1]:.4f}"))
    items += [("lr", "-" if s.lr is None else f"{s.lr:.2e}"),
              ("img/s", "-" if s.img_s is None else f"{s.img_s:.1f}"),
              ("ETA", fmt_duration(s.eta_s) if s.alive else "-"),
              ("elapsed", fmt_duration(s.elapsed_s)),
              ("cost", fmt_cost(s) + (f" ({fmt_cost(s, s.cost_per_epoch)}/epoch)" if s.cost_per_epoch else ""))]
    if s.max_hours:
        budget = s.max_hours * 3600
        left = f" ({fmt_duration(max(0.0, budget - s.elapsed_s))} left)" if s.alive and s.elapsed_s is not None else ""
        items.append(("budget", fmt_duration(budget) + left))
    if s.epoch_seconds:
        items.append(("epoch time", fmt_duration(s.epoch_seconds)))
    last = parse_checkpoint_name(s.last_checkpoint) if s.last_checkpoint else None
    last_text = f" (last epoch {last[0]})" if last else (f" (last {s.last_checkpoint})" if s.last_checkpoint else "")
    items.append(("checkpoints", f"{s.checkpoints}{last_text}"))
    if s.phase:
        items.append(("phase", s.phase))
    return items


def notes(s: RunSummary, escalation: StopEscalation | None = None) -> list[tuple[str, str, str]]:
    """Lines under the numbers: why the run stopped (and, while it stops, the signals the supervisor
    sent), its error, its newest warning (label, text, style)."""
    out = []
    sent = escalation_note(escalation) if s.alive else ""
    if sent:  # past the deadline fmt_stop_reason would still announce
        reason = fmt_stop_reason(dataclasses.replace(s, stop_deadline_t=None))
        out.append((s.state + ":", (reason + "; " if reason else "") + "the supervisor sent " + sent, "red"))
    elif s.state in ("stopping", "stopped") and (s.stop_reason or s.stop_deadline_t):
        out.append((s.state + ":", fmt_stop_reason(s), "magenta"))
    error = s.error or (s.errors[-1] if s.errors else "")
    if s.state == "stopped" and s.error:
        # The supervisor's note on how a stop went ("stopped on request (killed by signal 15)" after a
        # force stop): part of why it stopped, not a failure, so not under a red "error:".
        if out and out[-1][0] == "stopped:":
            label, reason, style = out.pop()
            out.append((label, f"{reason}; {s.error}" if reason else s.error, style))
        else:
            out.append(("stopped:", s.error, "magenta"))
        error = s.errors[-1] if s.errors else ""
    if error:
        out.append(("error:", error, "red"))
    if s.last_warning:
        more = f"  ({s.warnings} warnings in all; the log has each)" if s.warnings > 1 else ""
        out.append(("warning:", s.last_warning + more, "yellow"))
    return out


def flow(items: list[tuple[str, str]], width: int, gap: int = 2) -> Text:
    """`label value` pairs packed into lines of at most `width` cells; a pair is never split."""
    out = Text()
    used = 0
    for label, value in items:
        need = len(label) + 1 + Text(value).cell_len
        if used and used + gap + need > width:
            out.append("\n")
            used = 0
        elif used:
            out.append(" " * gap)
            used += gap
        out.append(label + " ", style="dim")
        out.append(value, style="bold" if label in ("loss", "ETA", "cost") else "")
        used += need
    return out


class RunStats(Widget):
    """The monitor's numbers, as many to a line as fit (two or three lines at 100 columns, one at 200);
    why the run stopped, its error and its newest warning on lines of their own."""

    DEFAULT_CSS = """
    RunStats { height: auto; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.items: list[tuple[str, str]] = []
        self.notes: list[tuple[str, str, str]] = []

    def show(self, s: RunSummary, history: TrainingHistory, escalation: StopEscalation | None = None) -> None:
        self.items = stats_items(s, history)
        self.notes = notes(s, escalation)
        self.refresh(layout=True)

    def _text(self, width: int) -> Text:
        text = flow(self.items, max(20, width))
        for label, message, style in self.notes:
            text.append(f"\n{label} ", style=f"{style} bold")
            text.append(message, style=style)
        return text

    def render(self) -> Text:
        return self._text(self.content_size.width)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._text(width).wrap(self.app.console, max(1, width)))


class MonitorScreen(Screen):
    ACTION_SCOPE = "monitor"
    BINDINGS = bindings("monitor")
    DEFAULT_CSS = """
    MonitorScreen #monitor-head { height: 1; padding: 0 1; background: $boost; }
    MonitorScreen #monitor-body { height: 1fr; }
    MonitorScreen LogView { width: 3fr; }
    MonitorScreen #monitor-side { width: 2fr; min-width: 40; }
    MonitorScreen LossPlot { height: 1fr; }
    MonitorScreen #monitor-stats { background: $boost; }
    """

    class Polled(Message):
        def __init__(self, summary: RunSummary, events: list[dict[str, Any]],
                     escalation: StopEscalation | None = None, now: float = 0.0) -> None:
            super().__init__()
            self.summary, self.events = summary, events
            self.escalation, self.now = escalation, now

    def __init__(self, run_dir: RunDir | str, *, poll: float = 1.0, log_poll: float = 0.25) -> None:
        super().__init__()
        self.run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        self.poll_seconds = poll
        self.log_poll = log_poll
        self.history = TrainingHistory()
        self.summary: RunSummary | None = None
        self._watcher = RunWatcher(self.run_dir)
        self._escalation = EscalationReader(self.run_dir)

    def compose(self) -> ComposeResult:
        yield Static(Text(self.run_dir.run_id, style="bold"), id="monitor-head")
        yield RunStats(id="monitor-stats")
        with Horizontal(id="monitor-body"):
            yield LogView(self.run_dir.log_path, poll=self.log_poll, id="monitor-log")
            with Vertical(id="monitor-side"):
                yield LossPlot(self.history, id="monitor-plot")
                yield GpuPanel(id="monitor-gpu")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one(LogView).focus()
        self.poll_now()
        if self.poll_seconds > 0:
            self.set_interval(self.poll_seconds, self.poll_now)

    def poll_now(self) -> None:
        self._poll(now_for(self))

    @work(thread=True, exclusive=True, group="monitor-poll", exit_on_error=False)
    def _poll(self, now: float) -> None:
        summary = self._watcher.refresh(now)
        self.post_message(self.Polled(summary, list(self._watcher.new_events), self._escalation.read(), now))

    @on(Polled)
    def _show(self, event: Polled) -> None:
        s = self.summary = event.summary
        if self.history.absorb(event.events):
            self.query_one(LossPlot).update_history()
        head = Text(s.run_id, style="bold")
        head.append("  ")
        head.append_text(state_cell(s.state, event.escalation, event.now))
        head.append("  ")
        head.append_text(progress_bar(summary_fraction(s), 20))
        if s.method:
            head.append(f"  {s.method}", style="dim")
        if s.description:
            head.append(f"  {s.description}", style="dim italic")
        self.query_one("#monitor-head", Static).update(head)
        self.query_one(RunStats).show(s, self.history, event.escalation)

    # --- actions -----------------------------------------------------------------------------------
    def action_back(self) -> None:
        self.app.pop_screen()

    def _request(self, name: str, done: str) -> None:
        state = self.run_dir.state()
        if state not in ALIVE_STATES:
            self.notify(f"The run is {state}; nobody would read the request.", severity="warning")
            return
        try:
            self.run_dir.request(name)
        except OSError as e:
            self.notify(f"Could not write the request: {e}", severity="error")
            return
        self.notify(done)

    def action_sample_now(self) -> None:
        self._request("sample-now", "Sample requested: images come at the next step.")

    def action_save_now(self) -> None:
        self._request("save-now", "Checkpoint requested: saved at the next step.")

    def action_stop(self) -> None:
        self._request("stop", "Stop requested: the trainer saves a checkpoint and exits.")

    def action_toggle_log_scale(self) -> None:
        self.query_one(LossPlot).toggle_log_scale()

    def action_cycle_metric(self) -> None:
        self.query_one(LossPlot).cycle_metric()
