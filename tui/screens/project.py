"""One project: tabs Dataset | Configs | Runs | Compare, and the watcher that keeps them current.

The screen starts a `ProjectWatcher` (unless the app runs with `watch=False`) and hands each batch of
changed paths to the tabs that care. Leaving the screen saves the caption being edited; a caption
conflict keeps the user here until it is resolved.
"""
from __future__ import annotations

from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Static, TabbedContent, TabPane

from engine.project import load_project_file
from engine.schema import ConfigError
from tui import actions
from tui.watch import FilesChanged, ProjectWatcher
from tui.widgets.compare_pane import ComparePane
from tui.widgets.configs_pane import ConfigsPane
from tui.widgets.dataset_pane import DatasetPane
from tui.widgets.key_footer import KeyFooter
from tui.widgets.runs_pane import RunsPane

TABS = ("dataset", "configs", "runs", "compare")


class ProjectScreen(Screen[None]):
    ACTION_SCOPE = "project"
    BINDINGS = actions.bindings("project")

    DEFAULT_CSS = """
    ProjectScreen #project-title { height: 1; background: $panel; color: $text; padding: 0 1; }
    ProjectScreen TabbedContent { height: 1fr; }
    ProjectScreen TabPane { padding: 0; }
    """

    def __init__(self, project_dir: str | Path, tab: str = "dataset") -> None:
        super().__init__()
        self.project_dir = Path(project_dir).resolve()
        self.initial_tab = tab if tab in TABS else "dataset"
        self.watcher: ProjectWatcher | None = None

    def _title(self) -> str:
        try:
            pf = load_project_file(self.project_dir)
            name, notes = pf.name, pf.notes.strip().splitlines()[0] if pf.notes.strip() else ""
        except ConfigError:
            name, notes = self.project_dir.name, "project.toml has errors"
        return f"tunelab › {name}" + (f" — {notes}" if notes else "")

    def compose(self) -> ComposeResult:
        app = self.app
        yield Static(self._title(), id="project-title", markup=False)
        with TabbedContent(initial=self.initial_tab, id="project-tabs"):
            with TabPane("Dataset", id="dataset"):
                yield DatasetPane(self.project_dir, image_mode=getattr(app, "image_mode", "halfblock"),
                                  animations=getattr(app, "animations", True), id="dataset-pane")
            with TabPane("Configs", id="configs"):
                yield ConfigsPane(self.project_dir, id="configs-pane")
            with TabPane("Runs", id="runs"):
                yield RunsPane(self.project_dir)
            with TabPane("Compare", id="compare"):
                yield ComparePane(self.project_dir)
        yield KeyFooter()

    def on_mount(self) -> None:
        if getattr(self.app, "watch_files", False):
            self.watcher = ProjectWatcher(self.project_dir, self)
            try:
                self.watcher.start()
            except OSError as e:
                self.watcher = None
                self.notify(f"not watching {self.project_dir.name} for outside changes: {e}", severity="warning")
        self.call_after_refresh(self._focus_tab, self.initial_tab)

    def _focus_tab(self, tab: str) -> None:
        target = {"dataset": "#dataset-table", "configs": "#configs-list", "runs": "#runs-table"}.get(tab)
        # Focus arrives through messages: when keys outpace it (2 then 3 on a loaded machine), a late one
        # must not focus a hidden tab's widget, which would switch the tab back.
        if target and self.query_one(TabbedContent).active == tab:
            for widget in self.query(target):
                widget.focus()

    def on_unmount(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None

    @on(FilesChanged)
    def _files_changed(self, event: FilesChanged) -> None:
        paths = set(event.paths)
        self.query_one(DatasetPane).files_changed(paths)
        self.query_one(ConfigsPane).files_changed(paths)

    @on(TabbedContent.TabActivated)
    def _tab(self, event: TabbedContent.TabActivated) -> None:
        self._focus_tab(event.pane.id or "")
        if event.pane.id == "configs":
            self.query_one(ConfigsPane).shown()

    def on_screen_resume(self) -> None:
        # Back from the monitor or a dialog: the Configs tab, if it is the one shown, checks again.
        if self.query_one(TabbedContent).active == "configs":
            self.query_one(ConfigsPane).shown()

    # --- actions -----------------------------------------------------------------------------
    def action_show_tab(self, tab: str) -> None:
        if tab in TABS:
            self.query_one(TabbedContent).active = tab

    def action_back(self) -> None:
        editor = self.query_one("#caption-editor")
        if not editor.save():  # type: ignore[attr-defined]
            self.notify("Resolve the caption conflict first", severity="warning")
            return
        self.dismiss(None)
