"""Home: the projects under the projects folder, with images, captions, runs and last activity.

The list paints at once with the project names; a worker then scans each project (images and
captions via `engine.project.scan_project`, runs via `engine.rundir`) and fills its row in.
A missing or empty projects folder is not an error: the screen says so and `n` creates a project.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Static
from textual.worker import get_current_worker

from engine.project import load_project_file, scan_project
from engine.rundir import STATES, list_runs
from engine.schema import ConfigError
from tui import actions
from tui.screens.error import ReportsWorkerErrors
from tui.widgets.key_footer import KeyFooter

if TYPE_CHECKING:
    from tui.screens.new_project import NewProject

COLUMNS = ("project", "images", "captioned", "runs", "last activity", "notes")
WIDTHS = (18, 7, 9, 24, 20, 40)  # fixed: rows fill in after the first paint, and DataTable does not re-widen
# The notes take the width the other columns leave (40 at least): each column has a cell of padding on
# either side, and a vertical scrollbar may need its 2 cells.
NOTES_ROOM = sum(WIDTHS[:-1]) + 2 * len(WIDTHS) + 2


def notes_width(table_width: int) -> int:
    return max(WIDTHS[-1], table_width - NOTES_ROOM)


@dataclass
class ProjectSummary:
    name: str
    path: Path
    images: str = "…"
    captioned: str = "…"
    runs: str = "…"
    activity: str = "…"
    notes: str = ""

    def row(self) -> tuple[str, ...]:
        return (self.name, self.images, self.captioned, self.runs, self.activity, self.notes)


def list_project_dirs(projects_dir: Path) -> list[Path]:
    try:
        entries = sorted(os.scandir(projects_dir), key=lambda e: e.name.lower())
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
    return [Path(e.path) for e in entries if not e.name.startswith(".") and e.is_dir()]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def last_activity(project_dir: Path, runs) -> float:
    """Newest of: project.toml, configs, the top-level folders (a caption save renames into its folder),
    and each run's status and events."""
    stamps = [_mtime(project_dir / "project.toml")]
    try:
        for e in os.scandir(project_dir):
            if not e.name.startswith(".") and e.name != "runs":
                stamps.append(_mtime(Path(e.path)))
    except OSError:
        pass
    stamps.extend(_mtime(p) for p in (project_dir / "configs").glob("*.toml"))
    for run in runs:
        stamps.extend((_mtime(run.status_path), _mtime(run.events_path)))
    return max(stamps)


def format_time(stamp: float) -> str:
    if not stamp:
        return "—"
    return datetime.fromtimestamp(stamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def summarise(project_dir: Path) -> ProjectSummary:
    s = ProjectSummary(project_dir.name, project_dir)
    try:
        pf = load_project_file(project_dir)
        s.name = pf.name or project_dir.name
        s.notes = pf.notes.strip().splitlines()[0] if pf.notes.strip() else ""
        ds = scan_project(project_dir, project=pf)
        usable = len(ds.usable_items)
        captioned = sum(1 for i in ds.items if i.usable and i.caption)
        s.images = f"{len(ds.items):,}"
        s.captioned = f"{100 * captioned // usable}%" if usable else "—"
    except ConfigError as e:
        s.images = s.captioned = "?"
        s.notes = f"project.toml has errors ({len(e.problems)})"
    except OSError as e:
        s.images = s.captioned = "?"
        s.notes = f"cannot read: {e.strerror or e}"
    runs = list_runs(project_dir)
    counts = Counter(r.state() for r in runs)
    s.runs = ", ".join(f"{counts[k]} {k}" for k in STATES if counts[k]) or "none"
    s.activity = format_time(last_activity(project_dir, runs))
    return s


class HomeScreen(ReportsWorkerErrors, Screen[None]):
    ACTION_SCOPE = "home"
    BINDINGS = actions.bindings("home")

    DEFAULT_CSS = """
    HomeScreen #home-title { height: 1; background: $panel; padding: 0 1; }
    HomeScreen #home-projects { height: 1fr; }
    HomeScreen #home-empty { height: auto; padding: 1 2; color: $text-muted; }
    """

    class Listed(Message):
        def __init__(self, dirs: list[Path]) -> None:
            super().__init__()
            self.dirs = dirs

    class Summarised(Message):
        def __init__(self, summary: ProjectSummary) -> None:
            super().__init__()
            self.summary = summary

    def __init__(self, projects_dir: Path) -> None:
        super().__init__()
        self.projects_dir = projects_dir
        self.summaries: dict[Path, ProjectSummary] = {}
        self._notes_width = WIDTHS[-1]

    def compose(self) -> ComposeResult:
        yield Static(f"tunelab — projects in {self.projects_dir}", id="home-title", markup=False)
        table = DataTable(id="home-projects", cursor_type="row", zebra_stripes=False)
        self._add_columns(table, WIDTHS[-1])
        yield table
        yield Static("", id="home-empty", markup=False)
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#home-empty").display = False
        self.action_refresh()

    def _add_columns(self, table: DataTable, notes: int) -> None:
        for label, width in zip(COLUMNS, (*WIDTHS[:-1], notes)):
            table.add_column(label, width=width)
        self._notes_width = notes

    def on_resize(self) -> None:
        """Give the notes the width the terminal has (was a fixed 40, cut with ~30 columns free at 160)."""
        table = self.query_one("#home-projects", DataTable)
        want = notes_width(self.size.width)
        if want != self._notes_width:
            row = table.cursor_row
            table.clear(columns=True)  # DataTable keeps a column's width: built again at the new one
            self._add_columns(table, want)
            for summary in self.summaries.values():
                table.add_row(*summary.row(), key=str(summary.path))
            if table.row_count:
                table.move_cursor(row=row)

    def on_screen_resume(self) -> None:
        if self.summaries:  # back from a project: its numbers may have changed
            self.action_refresh()

    # --- scanning ----------------------------------------------------------------------------
    def action_refresh(self) -> None:
        self._scan_worker()

    @work(thread=True, exclusive=True, group="home-scan", exit_on_error=False)
    def _scan_worker(self) -> None:
        dirs = list_project_dirs(self.projects_dir)
        self.post_message(self.Listed(dirs))
        worker = get_current_worker()
        for d in dirs:
            if worker.is_cancelled:
                return
            self.post_message(self.Summarised(summarise(d)))

    @on(Listed)
    def _listed(self, event: Listed) -> None:
        table = self.query_one("#home-projects", DataTable)
        keep = self.selected
        table.clear()
        old = self.summaries
        self.summaries = {}
        for d in event.dirs:
            s = old.get(d) or ProjectSummary(d.name, d)
            self.summaries[d] = s
            table.add_row(*s.row(), key=str(d))
        if keep is not None and keep in self.summaries:
            table.move_cursor(row=list(self.summaries).index(keep))
        empty = self.query_one("#home-empty", Static)
        if not event.dirs:
            where = self.projects_dir
            why = "does not exist yet" if not where.exists() else "has no projects yet"
            empty.update(f"{where} {why}. Press n to create a project there "
                         f"(or run `tunelab new NAME --from IMAGES_DIR`).")
        empty.display = not event.dirs
        table.display = bool(event.dirs)
        if event.dirs:
            table.focus()

    @on(Summarised)
    def _summarised(self, event: Summarised) -> None:
        s = event.summary
        if s.path not in self.summaries:
            return
        self.summaries[s.path] = s
        # Rebuilt rather than updated cell by cell: DataTable does not widen a column for a later, longer value.
        table = self.query_one("#home-projects", DataTable)
        row = table.cursor_row
        table.clear()
        for summary in self.summaries.values():
            table.add_row(*summary.row(), key=str(summary.path))
        table.move_cursor(row=row)

    # --- actions -----------------------------------------------------------------------------
    @property
    def selected(self) -> Path | None:
        table = self.query_one("#home-projects", DataTable)
        if not self.summaries or table.row_count == 0:
            return None
        row = table.cursor_row
        dirs = list(self.summaries)
        return dirs[row] if 0 <= row < len(dirs) else None

    @on(DataTable.RowSelected, "#home-projects")
    def _row_selected(self) -> None:
        self.action_open_project()

    def action_open_project(self) -> None:
        path = self.selected
        if path is None:
            self.app.bell()
            return
        self.app.open_project(path)  # type: ignore[attr-defined]

    def action_new_project(self) -> None:
        from tui.screens.new_project import NewProjectScreen

        self.app.push_screen(NewProjectScreen(self.projects_dir), self._created)

    def _created(self, made: NewProject | None) -> None:
        if made is None:
            return
        # What --from left out, as `tunelab new` says it: long enough on screen to read the names.
        self.notify("\n".join([f"created {made.path}", *made.summary]), timeout=15 if made.summary else 3,
                    markup=False)  # file names are shown as they are ('[1] dog.png')
        self.action_refresh()
        self.app.open_project(made.path)  # type: ignore[attr-defined]
