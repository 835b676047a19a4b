"""The Runs table's state cell: the state, and where a stop stands once the supervisor must escalate.

After a stop request the supervisor gives the trainer `launch.stop_timeout_s` to save and exit, then
sends SIGTERM, then SIGKILL `stop_kill_after_s` later (docs/CONTRACTS.md: status.json's
`stop_deadline_t`, `stop_kill_after_s`, `stop_escalation`). The monitor says so in a sentence; the table
has one short column, so while the run is alive the cell says only what comes next and when:

    stopping · TERM in 9m     the trainer has until then to save and exit
    stopping · TERM due       the deadline passed; the supervisor sends SIGTERM at its next check
    stopping · KILL in 40s    SIGTERM sent; SIGKILL follows
    stopping · KILL sent      SIGKILL sent; waiting for the processes to go

A countdown is rounded up (never "in 0m"), so the cell is at most 22 cells wide. Where that would cost
the table a column, the tag goes on a second line of the row (`state_cell(..., two_lines=True)`):
the column is then as wide as `KILL in 41s`. An ended run's cell is
its state alone (an old escalated run must not widen the column for good); the details under the table
name the signals it took (`escalation_note`).
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from engine.rundir import ALIVE_STATES, RunDir

STATE_STYLES = {
    "starting": "cyan", "running": "green bold", "stopping": "yellow", "finished": "blue",
    "failed": "red bold", "stopped": "magenta", "lost": "red reverse",
}


@dataclass(frozen=True)
class StopEscalation:
    """What status.json says about a stop: when SIGTERM is due, the SIGTERM→SIGKILL gap, and the
    signals sent so far as (name without SIG, unix time)."""

    deadline_t: float | None = None
    kill_after_s: float | None = None
    sent: tuple[tuple[str, float], ...] = ()

    @property
    def last_signal(self) -> str | None:
        return self.sent[-1][0] if self.sent else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read_escalation(status: dict[str, Any] | None) -> StopEscalation | None:
    """The stop fields of one attempt's status.json, or None when no stop is under way or was escalated."""
    if not status:
        return None
    sent = []
    for record in status.get("stop_escalation") or []:
        if isinstance(record, dict) and isinstance(record.get("signal"), str):
            sent.append((record["signal"].removeprefix("SIG"), _float(record.get("t")) or 0.0))
    deadline = _float(status.get("stop_deadline_t"))
    if deadline is None and not sent:
        return None
    return StopEscalation(deadline, _float(status.get("stop_kill_after_s")), tuple(sent))


class EscalationReader:
    """`read_escalation` of one run's status.json, parsed again only when the file changed (RunSummary
    carries only the deadline): a stat per poll. Called from poll workers."""

    def __init__(self, run: RunDir) -> None:
        self.run = run
        self._key: tuple[int, int] | None = None
        self._value: StopEscalation | None = None

    def read(self) -> StopEscalation | None:
        try:
            st = self.run.status_path.stat()
        except OSError:
            return None
        key = (st.st_mtime_ns, st.st_size)
        if key != self._key:
            self._key, self._value = key, read_escalation(self.run.read_status())
        return self._value


def short_wait(seconds: float) -> str:
    """A countdown rounded up: 40s, 2m, 1h05m."""
    s = max(1, math.ceil(seconds))
    if s < 100:
        return f"{s}s"
    m = math.ceil(s / 60)
    return f"{m}m" if m < 60 else f"{m // 60}h{m % 60:02d}m"


def escalation_tag(state: str, esc: StopEscalation | None, now: float) -> str:
    """The part after `·` in the state cell ("" when there is nothing to say)."""
    if esc is None:
        return ""
    last = esc.last_signal
    if state not in ALIVE_STATES:
        return ""
    if last == "KILL":
        return "KILL sent"
    if last == "TERM":
        if esc.kill_after_s is None:
            return "TERM sent"
        due = esc.sent[-1][1] + esc.kill_after_s - now
        return f"KILL in {short_wait(due)}" if due > 0 else "KILL due"
    if state == "stopping" and esc.deadline_t is not None:
        due = esc.deadline_t - now
        return f"TERM in {short_wait(due)}" if due > 0 else "TERM due"
    return ""


def state_cell(state: str, esc: StopEscalation | None, now: float, two_lines: bool = False) -> Text:
    """`stopping · TERM in 9m` on one line, or with `two_lines` the tag under the state (the Runs table
    on a narrow terminal: the column stays about as wide as `stopping`, so no other column goes)."""
    cell = Text(state, style=STATE_STYLES.get(state, ""))
    tag = escalation_tag(state, esc, now)
    if tag:
        cell.append(("\n" if two_lines else " · ") + tag,
                    style="red" if "KILL" in tag or tag.endswith("due") else "yellow")
    return cell


def _clock(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))


def escalation_note(esc: StopEscalation | None) -> str:
    """The signals the supervisor sent, with their local times; for SIGTERM alone, when SIGKILL follows."""
    if esc is None or not esc.sent:
        return ""
    text = ", ".join(f"SIG{name} at {_clock(t)}" for name, t in esc.sent)
    if esc.last_signal == "TERM" and esc.kill_after_s is not None:
        text += f"; SIGKILL at {_clock(esc.sent[-1][1] + esc.kill_after_s)} if it has not exited"
    return text
