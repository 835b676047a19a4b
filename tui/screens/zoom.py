"""One contact-sheet cell, full screen: the image as large as fits, with its prompt, kind, seed, guidance,
steps and size as the cell was rendered (its column's `samples.json`; a cell a resume rendered later
says so, `↻ later`, with the settings it differs in from its column), and the checkpoint.
Left/right step through the checkpoints for the same prompt and seed; `b` marks the checkpoint best.
"""
from __future__ import annotations

import time
from pathlib import Path

from PIL import Image as PILImage
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Center
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Static

from engine.contact_sheet import CellRender, Sheet, column_label, differs_text
from tui.actions import bindings
from tui.widgets.contact_grid import LATER_MARK
from tui.widgets.key_footer import KeyFooter


def cell_facts(sheet: Sheet, row: int, col: int) -> Text:
    """The cell's prompt and what it was rendered with (`Sheet.cell_render`: the cell's own settings,
    which after a `resume --set sample.*` may not be the prompt's first ones), and for a cell a resume
    rendered later, when and which settings differ from the rest of its column."""
    prompt = sheet.rows[row]
    column = sheet.columns[col]
    render = sheet.cell_render(row, col)
    settings = render.settings
    width, height = settings.get("width"), settings.get("height")
    t = Text()
    t.append(prompt.kind.upper(), style="bold")
    t.append(f"  prompt {prompt.index}\n", style="dim")
    t.append(prompt.text + "\n\n")
    steps = settings.get("steps")
    if steps is not None and settings.get("scheduler"):
        steps = f"{steps} ({settings['scheduler']})"
    for label, value in (("seed", sheet.seed), ("guidance", settings.get("guidance")), ("steps", steps),
                         ("size", f"{width}×{height}" if width and height else ""),
                         ("checkpoint", f"{column_label(column.epoch, column.step)}  ({column.name})")):
        if value == "":
            continue  # an older samples.json without the size
        t.append(f"{label:<11}", style="dim")
        t.append(f"{value if value is not None else '-'}\n")
    negative = settings.get("negative_prompt") or prompt.negative_prompt
    if negative:
        t.append(f"{'negative':<11}", style="dim")
        t.append(negative + "\n")
    if render.later:
        t.append(f"{LATER_MARK + ' later':<11}", style="yellow bold")
        t.append(later_note(render) + "\n", style="yellow")
    path = sheet.cell_path(row, col)
    t.append(f"{'file':<11}", style="dim")
    t.append(shown_path(sheet, path) if path else "not sampled yet", style="" if path else "italic")
    return t


def later_note(render: CellRender) -> str:
    """`rendered on resume (2026-12-02 07:42 UTC), with steps 30 (column: 20)`."""
    when = ""
    if render.t:
        when = time.strftime(" (%Y-%m-%d %H:%M UTC)", time.gmtime(render.t))
    if render.differs:
        return f"rendered on resume{when}, with {differs_text(render.differs)}"
    return f"rendered on resume{when}, with its column's settings"


def shown_path(sheet: Sheet, path: Path) -> str:
    """The sample's path from the project folder (`runs/<run>/samples/…`): short enough for one line,
    and what a user types from the project to open it elsewhere."""
    project = sheet.run_dir.path.parent.parent
    try:
        return str(path.relative_to(project))
    except ValueError:
        return str(path)


class ZoomScreen(Screen):
    ACTION_SCOPE = "zoom"
    BINDINGS = bindings("zoom")
    DEFAULT_CSS = """
    ZoomScreen { layout: vertical; }
    ZoomScreen #zoom-frame { height: 1fr; align: center middle; }
    ZoomScreen #zoom-facts { height: auto; max-height: 14; padding: 0 2; border-top: solid $primary 40%; }
    ZoomScreen #zoom-missing { width: 40; height: 5; content-align: center middle; border: round $panel-lighten-2; }
    """

    class MarkBest(Message):
        def __init__(self, column: int) -> None:
            super().__init__()
            self.column = column

    class Loaded(Message):
        def __init__(self, path: Path, image: PILImage.Image | None) -> None:
            super().__init__()
            self.path, self.image = path, image

    def __init__(self, sheet: Sheet, row: int, col: int, mode: str = "halfblock",
                 on_best=None) -> None:
        super().__init__()
        self.sheet, self.row, self.col, self.mode = sheet, row, col, mode
        self.on_best = on_best
        self._image_widget: Widget | None = None

    def compose(self) -> ComposeResult:
        from tui.widgets.image_preview import image_widget_class

        with Center(id="zoom-frame"):
            cls = image_widget_class(self.mode) if self.mode != "none" else None
            if cls is not None:
                self._image_widget = cls(None, id="zoom-image")
                yield self._image_widget
            yield Static("", id="zoom-missing")
        yield Static("", id="zoom-facts")
        yield KeyFooter()

    def on_mount(self) -> None:
        self._show()

    def on_resize(self) -> None:
        self._show()

    def _box(self) -> tuple[int, int]:
        frame = self.query_one("#zoom-frame")
        h = max(4, frame.size.height or (self.size.height - 10))
        w = max(8, min(frame.size.width or self.size.width, 2 * h))  # square pictures: 1 col × 2 rows
        return w, w // 2

    def _show(self) -> None:
        self.query_one("#zoom-facts", Static).update(cell_facts(self.sheet, self.row, self.col))
        path = self.sheet.cell_path(self.row, self.col)
        missing = self.query_one("#zoom-missing", Static)
        if path is None or self._image_widget is None:
            if self._image_widget is not None:
                self._image_widget.display = False
            missing.display = True
            missing.update("not sampled yet" if path is None else path.name)
            return
        w, h = self._box()
        self._image_widget.styles.width = w
        self._image_widget.styles.height = h
        self._load(path, (w, h * 2) if self.mode == "halfblock" else (1024, 1024))

    @work(thread=True, exclusive=True, group="zoom-load", exit_on_error=False)
    def _load(self, path: Path, box: tuple[int, int]) -> None:
        try:
            with PILImage.open(path) as src:
                img = src.convert("RGB")
            img.thumbnail(box, PILImage.Resampling.LANCZOS)
        except (OSError, ValueError, SyntaxError):
            img = None
        self.post_message(self.Loaded(path, img))

    @on(Loaded)
    def _loaded(self, event: Loaded) -> None:
        if event.path != self.sheet.cell_path(self.row, self.col) or self._image_widget is None:
            return
        missing = self.query_one("#zoom-missing", Static)
        if event.image is None:
            self._image_widget.display = False
            missing.display = True
            missing.update(Text("cannot decode the image", style="red"))
            return
        self._image_widget.image = event.image
        self._image_widget.display = True
        missing.display = False

    def action_close(self) -> None:
        self.dismiss(self.col)

    def action_move(self, delta: int) -> None:
        self.col = max(0, min(len(self.sheet.columns) - 1, self.col + delta))
        self._show()

    def action_jump(self, col: int) -> None:
        """The first (0) or last (-1) checkpoint column, as home/end do in the grid."""
        self.col = max(0, len(self.sheet.columns) - 1) if col < 0 else 0
        self._show()

    def action_mark_best(self) -> None:
        if self.on_best is not None:
            self.on_best(self.col)
