"""The contact sheet on screen: one page of prompts (rows) × checkpoints (columns), with a cursor.

The grid shows as many rows and columns as fit its size, paging to keep the cursor in view. In the
half-block and `none` modes the cells grow with the room (`cell_size`): as big as lets about
`TARGET_COLS` checkpoints side by side and `TARGET_ROWS` prompts fit (fewer when the sheet has fewer),
never smaller than `CELL_W`×`CELL_H` terminal cells (a 16×16 px thumbnail) nor taller than `CELL_H_MAX`;
so a small terminal shows what it did before and a big one bigger thumbnails. kitty/sixel cells stay
`CELL_W`×`CELL_H` (their pixels are the terminal's own, already sharp). Arrows move the cursor,
`pageup`/`pagedown` move a page of rows. Images never decode on the UI thread: the visible cells' thumbnails are made by a thread worker at the
exact pixel size the image mode draws (a half-block cell is 1×2 pixels) and kept in an LRU keyed by
path, modification time and size, so paging back, or a refresh while the run writes, costs nothing.

Image modes (`app.image_mode`): `halfblock` (default; textual-image's `HalfcellImage`), `kitty`, `sixel`
(their textual-image widgets) and `none` (a mark that the sample exists). A missing cell (not sampled
yet) is an empty box. A cell a resume rendered later (`Sheet.later_cells`: new prompts or seeds, maybe
with other sample settings than its column) has `↻` and the settings it differs in under it, in the gap
that also carries the cursor's mark (kitty/sixel: a dashed underline).
"""
from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image as PILImage
from rich.color import Color as RichColor
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Static

from engine.contact_sheet import Sheet
from tui.actions import bindings

CELL_W = 16  # terminal columns of the smallest cell (and of every kitty/sixel cell)
PHASE_STYLES = {"textual_inversion": "bold magenta", "lora": "bold cyan"}
CELL_H = 8  # terminal rows of the smallest cell image
CELL_H_MAX = 24  # the biggest cell: 48×24 (a 48×48 px half-block thumbnail); beyond that, zoom (enter)
TARGET_COLS, TARGET_ROWS = 8, 4  # the page cells grow to fill: epochs are compared side by side
LABEL_W = 30
HEADER_H = 2
KIND_STYLES = {"accuracy": "bold green", "flexibility": "bold cyan", "preservation": "bold magenta",
               "other": "bold"}
THUMB_CACHE = 512
LATER_MARK = "↻"  # under a cell a resume rendered later (the zoom and the status line say it in words)


def cell_size(width: int, height: int, n_rows: int, n_cols: int) -> tuple[int, int]:
    """Terminal columns × rows of one cell on a grid of `width`×`height` for a sheet of `n_rows` prompts
    × `n_cols` checkpoints: square half-block pixels (2 columns per row), grown until about
    TARGET_COLS × TARGET_ROWS cells (or the whole sheet, if smaller) fill the room."""
    cols = max(1, min(n_cols, TARGET_COLS))
    rows = max(1, min(n_rows, TARGET_ROWS))
    by_width = ((width - LABEL_W) // cols - 1) // 2  # each cell has a 1-column gap on its right
    by_height = (height - HEADER_H) // rows - 1  # and a 1-row gap (the cursor's mark) under it
    k = max(CELL_H, min(by_width, by_height, CELL_H_MAX))
    return 2 * k, k


def pixel_box(mode: str, w: int, h: int) -> tuple[int, int]:
    """The pixel size a cell of w×h terminal cells draws in a mode."""
    if mode in ("kitty", "sixel"):
        from tui.widgets.image_preview import cell_pixels

        cw, ch = cell_pixels()
        return w * cw, h * ch
    return w, h * 2  # half blocks: one column, two pixel rows per cell


def _styled(strip: Strip) -> Strip:
    """Give style-less segments the null style: Textual's NO_COLOR filter fails on a segment without one."""
    segments = list(strip)
    if all(seg.style is not None for seg in segments):
        return strip
    return Strip([seg if seg.style is not None else Segment(seg.text, Style.null(), seg.control) for seg in segments],
                 strip.cell_length)


class ThumbCache:
    """Decoded, resized thumbnails (LRU). Thread-safe enough: only the loader worker writes it."""

    def __init__(self, size: int = THUMB_CACHE):
        self.size = size
        self._items: OrderedDict[tuple[str, int, int, tuple[int, int]], PILImage.Image] = OrderedDict()

    @staticmethod
    def key(path: Path, box: tuple[int, int]) -> tuple[str, int, int, tuple[int, int]] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return str(path), st.st_mtime_ns, st.st_size, box

    def get(self, key: Any) -> PILImage.Image | None:
        img = self._items.get(key)
        if img is not None:
            self._items.move_to_end(key)
        return img

    def make(self, path: Path, box: tuple[int, int]) -> PILImage.Image | None:
        key = self.key(path, box)
        if key is None:
            return None
        img = self.get(key)
        if img is not None:
            return img
        try:
            with PILImage.open(path) as src:
                src.draft("RGB", box)
                img = src.convert("RGB")
        except (OSError, ValueError, SyntaxError):
            return None
        # Fit inside the box (keep the aspect), centred on the background.
        img.thumbnail(box, PILImage.Resampling.BILINEAR)
        if img.size != box:
            canvas = PILImage.new("RGB", box, (0, 0, 0))
            canvas.paste(img, ((box[0] - img.width) // 2, (box[1] - img.height) // 2))
            img = canvas
        self._items[key] = img
        if len(self._items) > self.size:
            self._items.popitem(last=False)
        return img


class SampleCell(Widget):
    """One cell: an image widget of the app's mode, or a placeholder."""

    DEFAULT_CSS = f"""
    SampleCell {{ width: {CELL_W}; height: {CELL_H}; margin-right: 1; background: $panel; }}
    SampleCell.-missing {{ background: $surface; border: round $panel-lighten-2; }}
    SampleCell.-cursor {{ outline: heavy $accent; }}
    SampleCell.-best {{ background: $warning 30%; }}
    SampleCell.-later {{ outline-bottom: dashed $secondary; }}
    SampleCell > .placeholder {{ width: 100%; height: 100%; content-align: center middle; color: $text-muted; }}
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self._image_widget: Widget | None = None
        self.path: Path | None = None

    def compose(self) -> ComposeResult:
        from tui.widgets.image_preview import image_widget_class

        cls = image_widget_class(self.mode) if self.mode != "none" else None
        if cls is not None:
            self._image_widget = cls(None)
            self._image_widget.styles.width = CELL_W
            self._image_widget.styles.height = CELL_H
            self._image_widget.display = False
            yield self._image_widget
        yield Static("", classes="placeholder")

    def show(self, path: Path | None, image: PILImage.Image | None, pending: bool = False) -> None:
        self.path = path
        self.set_class(path is None, "-missing")
        placeholder = self.query_one(".placeholder", Static)
        if self._image_widget is not None and image is not None:
            if getattr(self._image_widget, "image", None) is not image:
                self._image_widget.image = image
            self._image_widget.display = True
            placeholder.display = False
            return
        if self._image_widget is not None:
            self._image_widget.display = False
        placeholder.display = True
        if path is None:
            placeholder.update("")
        elif pending:
            placeholder.update("…")
        elif self.mode == "none":
            placeholder.update(Text(path.name, style="dim"))
        else:
            placeholder.update(Text("unreadable", style="red"))


def later_mark(render: Any, width: int) -> str:
    """`↻ steps 30` (the settings the cell differs in from its column), or `↻` alone, cut to `width`."""
    from engine.contact_sheet import differs_text

    text = f"{LATER_MARK} {differs_text(render.differs, short=True)}".rstrip()
    return text if len(text) <= width else text[:max(1, width - 1)] + "…" if width > 2 else LATER_MARK


@dataclass(frozen=True)
class Page:
    row0: int
    col0: int
    rows: int
    cols: int


class ContactGrid(Widget, can_focus=True):
    """The visible page of a `Sheet`; `CursorMoved` says which cell is selected."""

    DEFAULT_CSS = f"""
    ContactGrid {{ height: 1fr; layout: vertical; }}
    ContactGrid > .grid-row {{ height: {CELL_H + 1}; }}
    ContactGrid > .grid-head {{ height: {HEADER_H}; }}
    ContactGrid .label {{ width: {LABEL_W}; height: 100%; padding-right: 1; }}
    ContactGrid .col-head {{ width: {CELL_W}; margin-right: 1; height: {HEADER_H}; }}
    ContactGrid .empty {{ padding: 1 2; color: $text-muted; }}
    """

    ACTION_SCOPE = "grid"
    BINDINGS = bindings("grid")  # from tui.actions, so F1 lists them and [keys] rebinds them

    cursor: reactive[tuple[int, int]] = reactive((0, 0), init=False)

    class CursorMoved(Message):
        def __init__(self, grid: "ContactGrid", row: int, col: int) -> None:
            super().__init__()
            self.grid, self.row, self.col = grid, row, col

    class ThumbsReady(Message):
        def __init__(self, images: dict[Path, PILImage.Image | None], generation: int) -> None:
            super().__init__()
            self.images, self.generation = images, generation

    def __init__(self, mode: str = "halfblock", *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.mode = mode
        self.sheet: Sheet | None = None
        self.best: str | None = None
        self.page = Page(0, 0, 0, 0)
        self.thumbs = ThumbCache()
        self._shown: dict[Path, PILImage.Image | None] = {}
        self._generation = 0
        self._built: tuple[int, int] | None = None
        self.cell: tuple[int, int] = (CELL_W, CELL_H)  # terminal columns × rows of a cell, on this page
        # halfblock and none are drawn by this widget itself (Line API, cached strips): one widget
        # instead of ~200, so an 8×8 page paints in milliseconds. kitty/sixel need textual-image widgets.
        self.line_mode = mode in ("halfblock", "none")
        self._lines: dict[int, Strip] = {}
        self._pixels: OrderedDict[int, tuple[PILImage.Image, list[list[Segment]]]] = OrderedDict()

    # --- data ---------------------------------------------------------------------------------------
    def set_sheet(self, sheet: Sheet | None, best: str | None = None) -> None:
        self.sheet, self.best = sheet, best
        if sheet is not None:
            r, c = self.cursor
            r = min(r, max(0, len(sheet.rows) - 1))
            c = min(c, max(0, len(sheet.columns) - 1))
            if (r, c) != self.cursor:
                self.cursor = (r, c)
        self._layout_page()

    def on_resize(self) -> None:
        self._layout_page()

    def fit(self) -> tuple[int, int]:
        cw, ch = self.cell
        rows = max(1, (self.size.height - HEADER_H) // (ch + 1))
        cols = max(1, (self.size.width - LABEL_W) // (cw + 1))
        return rows, cols

    @property
    def box(self) -> tuple[int, int]:
        """The thumbnails' pixel size on this page (the ThumbCache key has it)."""
        return pixel_box(self.mode, *self.cell)

    def _layout_page(self) -> None:
        if not self.is_mounted:
            return
        sheet = self.sheet
        if sheet is None or not sheet.rows or not sheet.columns:
            self._build(0, 0)
            return
        if self.line_mode:
            cell = cell_size(self.size.width, self.size.height, len(sheet.rows), len(sheet.columns))
            if cell != self.cell:
                self.cell = cell
                self._lines.clear()
        rows, cols = self.fit()
        rows, cols = min(rows, len(sheet.rows)), min(cols, len(sheet.columns))
        r, c = self.cursor
        row0, col0 = self.page.row0, self.page.col0
        if r < row0:
            row0 = r
        elif r >= row0 + rows:
            row0 = r - rows + 1
        if c < col0:
            col0 = c
        elif c >= col0 + cols:
            col0 = c - cols + 1
        row0 = max(0, min(row0, len(sheet.rows) - rows))
        col0 = max(0, min(col0, len(sheet.columns) - cols))
        self.page = Page(row0, col0, rows, cols)
        self._build(rows, cols)
        self._fill()

    def _build(self, rows: int, cols: int) -> None:
        """(Re)create the cell widgets when the page's shape changes; otherwise they are reused."""
        if self._built == (rows, cols):
            return
        self._built = (rows, cols)
        if self.line_mode:
            self._lines.clear()
            self.refresh()
            return
        self.remove_children()
        if rows == 0:
            self.mount(Static("No samples yet. They appear here as the run writes them "
                              "(epoch 0 is sampled before training).", classes="empty"))
            return
        head = Horizontal(Static("", classes="label"),
                          *[Static("", classes="col-head") for _ in range(cols)], classes="grid-head")
        lines = [Horizontal(Static("", classes="label"), *[SampleCell(self.mode) for _ in range(cols)],
                            classes="grid-row") for _ in range(rows)]
        self.mount(head, *lines)
        self.call_after_refresh(self._fill)

    def _fill(self) -> None:
        sheet, page = self.sheet, self.page
        if sheet is None or self._built in (None, (0, 0)):
            return
        if self.line_mode:
            self._fill_lines()
            return
        heads = list(self.query(".col-head").results(Static))
        if len(heads) != page.cols:
            return  # not mounted yet; called again after the refresh
        for i, head in enumerate(heads):
            head.update(self._head_text(page.col0 + i))
        rows = list(self.query(".grid-row").results(Horizontal))
        if len(rows) != page.rows or any(len(line.children) != page.cols + 1 for line in rows):
            return  # the new rows are still mounting; called again after the refresh
        wanted: list[Path] = []
        box = self.box
        for i, line in enumerate(rows):
            r = page.row0 + i
            line.query_one(".label", Static).update(self._label_text(r, i))
            for j, cell in enumerate(line.query(SampleCell).results(SampleCell)):
                c = page.col0 + j
                path = sheet.cell_path(r, c)
                cell.set_class((r, c) == self.cursor, "-cursor")
                cell.set_class(sheet.columns[c].name == self.best, "-best")
                cell.set_class((r, c) in sheet.later_cells(), "-later")
                if path is None:
                    cell.show(None, None)
                    continue
                key = self.thumbs.key(path, box)
                image = self.thumbs.get(key) if key else None
                if image is None and self.mode != "none":
                    wanted.append(path)
                cell.show(path, image, pending=image is None)
        if wanted:
            self._generation += 1
            self._load(wanted, box, self._generation)

    @work(thread=True, exclusive=True, group="grid-thumbs", exit_on_error=False)
    def _load(self, paths: list[Path], box: tuple[int, int], generation: int) -> None:
        images = {p: self.thumbs.make(p, box) for p in paths}
        self.post_message(self.ThumbsReady(images, generation))

    @on(ThumbsReady)
    def _thumbs_ready(self, event: ThumbsReady) -> None:
        event.stop()
        if self.line_mode:
            self._lines.clear()
            self.refresh()
            return
        for cell in self.query(SampleCell).results(SampleCell):
            if cell.path in event.images:
                img = event.images[cell.path]
                cell.show(cell.path, img, pending=False)

    # --- the cursor ---------------------------------------------------------------------------------
    def action_move(self, drow: int, dcol: int) -> None:
        if self.sheet is None or not self.sheet.rows or not self.sheet.columns:
            return
        r = max(0, min(len(self.sheet.rows) - 1, self.cursor[0] + drow))
        c = max(0, min(len(self.sheet.columns) - 1, self.cursor[1] + dcol))
        self.cursor = (r, c)

    def action_jump(self, col: int) -> None:
        if self.sheet is None or not self.sheet.columns:
            return
        self.cursor = (self.cursor[0], col % len(self.sheet.columns))

    def page_rows(self, direction: int) -> None:
        """A page of prompts down or up: the next rows fill the page (not one row scrolled in), the
        cursor keeps its place on the page."""
        sheet, page = self.sheet, self.page
        if sheet is None or not sheet.rows or not sheet.columns:
            return
        step = direction * max(1, page.rows)
        row0 = max(0, min(page.row0 + step, len(sheet.rows) - max(1, page.rows)))
        r = max(0, min(len(sheet.rows) - 1, self.cursor[0] + (row0 - page.row0 if row0 != page.row0 else step)))
        self.page = Page(row0, page.col0, page.rows, page.cols)
        self.cursor = (r, self.cursor[1])
        self._layout_page()

    def watch_cursor(self, old: tuple[int, int], cursor: tuple[int, int]) -> None:
        page = self.page
        inside = (page.row0 <= cursor[0] < page.row0 + page.rows and page.col0 <= cursor[1] < page.col0 + page.cols)
        if inside and self._built == (page.rows, page.cols) and self.sheet is not None:
            self._move_cursor(old, cursor)  # same page: restyle four widgets, not the page
        else:
            self._layout_page()
        self.post_message(self.CursorMoved(self, *cursor))

    def _move_cursor(self, old: tuple[int, int], new: tuple[int, int]) -> None:
        page = self.page
        if self.line_mode:
            self._lines.clear()
            self.refresh()
            return
        rows = list(self.query(".grid-row").results(Horizontal))
        heads = list(self.query(".col-head").results(Static))
        if len(rows) != page.rows or len(heads) != page.cols:
            return

        def cell(rc: tuple[int, int]) -> SampleCell | None:
            r, c = rc[0] - page.row0, rc[1] - page.col0
            if 0 <= r < page.rows and 0 <= c < page.cols:
                return list(rows[r].query(SampleCell).results(SampleCell))[c]
            return None

        for rc, on in ((old, False), (new, True)):
            target = cell(rc)
            if target is not None:
                target.set_class(on, "-cursor")
        if old[1] != new[1]:
            for c in (old[1], new[1]):
                if page.col0 <= c < page.col0 + page.cols:
                    heads[c - page.col0].update(self._head_text(c))
        if old[0] != new[0]:
            for r in (old[0], new[0]):
                if page.row0 <= r < page.row0 + page.rows:
                    rows[r - page.row0].query_one(".label", Static).update(self._label_text(r, r - page.row0))

    # --- what is on screen (tests, benchmarks) ------------------------------------------------------
    def visible_cells(self) -> list[Path | None]:
        sheet, page = self.sheet, self.page
        if sheet is None or self._built in (None, (0, 0)):
            return []
        return [sheet.cell_path(r, c) for r in range(page.row0, page.row0 + page.rows)
                for c in range(page.col0, page.col0 + page.cols)]

    def all_loaded(self) -> bool:
        """Every visible sample has its thumbnail (always true in `none` mode)."""
        if self.mode == "none":
            return True
        box = self.box
        for path in self.visible_cells():
            if path is not None:
                key = self.thumbs.key(path, box)
                if key is not None and self.thumbs.get(key) is None:
                    return False
        return True

    # --- line mode: the page drawn as strips ---------------------------------------------------------
    def _fill_lines(self) -> None:
        sheet, page = self.sheet, self.page
        assert sheet is not None
        box = self.box
        wanted = []
        if self.mode != "none":
            for r in range(page.row0, page.row0 + page.rows):
                for c in range(page.col0, page.col0 + page.cols):
                    path = sheet.cell_path(r, c)
                    key = self.thumbs.key(path, box) if path else None
                    if key is not None and self.thumbs.get(key) is None:
                        wanted.append(path)
        self._lines.clear()
        self.refresh()
        if wanted:
            self._generation += 1
            self._load(wanted, box, self._generation)

    def _cell_pixels(self, image: PILImage.Image) -> list[list[Segment]]:
        """An image's half-block segments, one list per text row (cached per image)."""
        hit = self._pixels.get(id(image))
        if hit is not None and hit[0] is image:
            return hit[1]
        w, h = image.size
        px = image.load()
        styles: dict[tuple, Style] = {}
        rows: list[list[Segment]] = []
        for y in range(0, h - 1, 2):
            segs: list[Segment] = []
            for x in range(w):
                pair = (px[x, y], px[x, y + 1])
                style = styles.get(pair)
                if style is None:
                    style = styles[pair] = Style(color=RichColor.from_rgb(*pair[0]),
                                                  bgcolor=RichColor.from_rgb(*pair[1]))
                segs.append(Segment("▀", style))
            rows.append(segs)
        self._pixels[id(image)] = (image, rows)
        if len(self._pixels) > 256:
            self._pixels.popitem(last=False)
        return rows

    def render_line(self, y: int) -> Strip:
        if not self.line_mode:
            return super().render_line(y)
        strip = self._lines.get(y)
        if strip is None:
            strip = self._lines[y] = _styled(self._draw_line(y))
        return strip

    def _draw_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        sheet, page = self.sheet, self.page
        if sheet is None or not sheet.rows or not sheet.columns:
            if y == 1:
                return Strip(list(Text("  No samples yet. They appear here as the run writes them "
                                       "(epoch 0 is sampled before training).", style="dim")
                                  .render(self.app.console))).crop_extend(0, width, base)
            return Strip.blank(width, base)
        console = self.app.console
        segs: list[Segment] = []
        cw, ch = self.cell

        def text(t: Text, w: int) -> None:
            t = t.copy()
            t.truncate(w, overflow="ellipsis", pad=True)
            segs.extend(t.render(console))

        if y < HEADER_H:
            text(Text(""), LABEL_W)
            for i in range(page.cols):
                lines = self._head_text(page.col0 + i).split("\n")
                text(lines[y] if y < len(lines) else Text(""), cw)
                segs.append(Segment(" "))
            return Strip(segs).crop_extend(0, width, base)
        row_i, sub = divmod(y - HEADER_H, ch + 1)
        if row_i >= page.rows:
            return Strip.blank(width, base)
        r = page.row0 + row_i
        label_lines = self._label_text(r, row_i).wrap(console, LABEL_W - 1)
        text(label_lines[sub] if sub < len(label_lines) and sub < ch else Text(""), LABEL_W)
        box = self.box
        muted = Style(color="grey50")
        later = sheet.later_cells()
        for i in range(page.cols):
            c = page.col0 + i
            if sub == ch:  # the gap under a row: the cursor's mark, and a cell rendered later says so
                cursor = (r, c) == self.cursor
                note = later_mark(later[(r, c)], cw - 2 if cursor else cw) if (r, c) in later else ""
                fill = "━" if cursor else " "
                bar = fill * (cw - len(note) - (1 if note and cursor else 0))
                segs.append(Segment(bar, Style(color="yellow", bold=True)))
                if note:
                    if cursor:
                        segs.append(Segment(" "))
                    segs.append(Segment(note, Style(color="cyan", bold=bool(later[(r, c)].differs))))
            else:
                path = sheet.cell_path(r, c)
                key = self.thumbs.key(path, box) if path is not None and self.mode != "none" else None
                image = self.thumbs.get(key) if key else None
                if image is not None and image.size == box:
                    segs.extend(self._cell_pixels(image)[sub])
                elif path is None:  # not sampled (yet): an empty box
                    if sub == 0:
                        line = "┌" + "─" * (cw - 2) + "┐"
                    elif sub == ch - 1:
                        line = "└" + "─" * (cw - 2) + "┘"
                    else:
                        line = "│" + " " * (cw - 2) + "│"
                    segs.append(Segment(line, muted))
                else:
                    label = "…" if self.mode != "none" else path.stem
                    line = (label if sub == ch // 2 else "").center(cw)[:cw]
                    segs.append(Segment(line, muted))
            segs.append(Segment(" "))
        return Strip(segs).crop_extend(0, width, base)

    def _head_text(self, c: int) -> Text:
        assert self.sheet is not None
        col = self.sheet.columns[c]
        text = Text("base" if col.epoch == 0 else f"epoch {col.epoch}", style="bold")
        if col.name == self.best:
            text.append(" ★", style="yellow")
        text.append(f"\nstep {col.step}", style="dim")
        if col.phase_tag:  # pivotal tuning: which phase trained up to this checkpoint
            sep = " · " if len(f"step {col.step} · {col.phase_tag}") <= self.cell[0] else " "
            text.append(sep, style="dim")
            text.append(col.phase_tag, style=PHASE_STYLES.get(col.phase, "bold"))
        if c == self.cursor[1]:
            text.stylize("reverse")
        return text

    def _label_text(self, r: int, line: int) -> Text:
        assert self.sheet is not None
        prompt = self.sheet.rows[r]
        label = Text()
        if line == 0 or r == 0 or self.sheet.rows[r - 1].kind != prompt.kind:
            label.append(prompt.kind.upper() + "\n", style=KIND_STYLES.get(prompt.kind, "bold"))
        label.append(prompt.text, style="reverse" if r == self.cursor[0] else "")
        return label
