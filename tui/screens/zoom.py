"""One contact-sheet cell, full screen: the image as large as fits, with its prompt, kind, seed, guidance
and steps (from the column's `samples.json`, falling back to what the sheet knows), and the checkpoint.
Left/right step through the checkpoints for the same prompt and seed; `b` marks the checkpoint best.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image as PILImage
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Center
from textual.message import Message
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer, Static

from engine.contact_sheet import Sheet, column_label
from tui.actions import bindings


def cell_facts(sheet: Sheet, row: int, col: int) -> Text:
    prompt = sheet.rows[row]
    column = sheet.columns[col]
    info = sheet.column_info(col)
    guidance = prompt.guidance if prompt.guidance is not None else info.get("guidance")
    steps = prompt.steps if prompt.steps is not None else info.get("steps")
    t = Text()
    t.append(prompt.kind.upper(), style="bold")
    t.append(f"  prompt {prompt.index}\n", style="dim")
    t.append(prompt.text + "\n\n")
    for label, value in (("seed", sheet.seed), ("guidance", guidance), ("steps", steps),
                         ("checkpoint", f"{column_label(column.epoch, column.step)}  ({column.name})")):
        t.append(f"{label:<11}", style="dim")
        t.append(f"{value if value is not None else '-'}\n")
    if prompt.negative_prompt:
        t.append(f"{'negative':<11}", style="dim")
        t.append(prompt.negative_prompt + "\n")
    path = sheet.cell_path(row, col)
    t.append(f"{'file':<11}", style="dim")
    t.append(shown_path(sheet, path) if path else "not sampled yet", style="" if path else "italic")
    return t


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
    ZoomScreen #zoom-facts { height: auto; max-height: 12; padding: 0 2; border-top: solid $primary 40%; }
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
        yield Footer()

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

    def action_mark_best(self) -> None:
        if self.on_best is not None:
            self.on_best(self.col)
