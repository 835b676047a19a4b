"""The dataset list: one line per image (file, concept, size, caption start, flags), fast at any size.

A Line-API `ScrollView`: only the visible lines are rendered, from the item list and a small strip
cache, so 10,000 images cost no more to paint or scroll than 40 (Textual's DataTable builds every row
up front and took 1.6 s to refill 5,000 rows on a filter keystroke). The header is line 0 of every
frame and does not scroll. The owner gives it the (already filtered) items with `set_items`.
"""
from __future__ import annotations

from typing import Sequence

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from engine.project import Item
from tui import actions

COLUMNS = ("file", "concept", "size", "caption", "flags")


def fit(text: str, width: int) -> str:
    """Exactly `width` cells: padded, or cut with an ellipsis."""
    if width <= 0:
        return ""
    if cell_len(text) <= width:
        return set_cell_size(text, width)
    return set_cell_size(text, width - 1) + "…"


def fit_end(text: str, width: int) -> str:
    """Exactly `width` cells, cut at the start: a path keeps its file name (`…plush/photo.png`), which is
    what tells rows apart when they share a long folder."""
    if width <= 0:
        return ""
    if cell_len(text) <= width:
        return set_cell_size(text, width)
    kept, used = [], 0
    for ch in reversed(text):
        used += cell_len(ch)
        if used > width - 1:
            break
        kept.append(ch)
    return set_cell_size("…" + "".join(reversed(kept)), width)


def short_flags(flags: Sequence[str]) -> str:
    """`unreadable: truncated (…)` → `unreadable`; keeps the list readable in a narrow column."""
    out = []
    for f in flags:
        head = f.split(":", 1)[0].split(" (", 1)[0]
        out.append(head)
    return ", ".join(out)


class DatasetTable(ScrollView, can_focus=True):
    """A virtualised list of dataset items with a row cursor."""

    ACTION_SCOPE = "list"
    BINDINGS = actions.bindings("list")

    COMPONENT_CLASSES = {
        "dataset-table--header",
        "dataset-table--cursor",
        "dataset-table--cursor-blurred",
        "dataset-table--flagged",
        "dataset-table--unusable",
        "dataset-table--muted",
    }

    DEFAULT_CSS = """
    DatasetTable { height: 1fr; background: $surface; }
    DatasetTable > .dataset-table--header { text-style: bold; background: $panel; color: $text; }
    DatasetTable > .dataset-table--cursor { background: $block-cursor-background; color: $block-cursor-foreground;
        text-style: bold; }
    DatasetTable > .dataset-table--cursor-blurred { background: $block-cursor-blurred-background; }
    DatasetTable > .dataset-table--flagged { color: $warning; }
    DatasetTable > .dataset-table--unusable { color: $error; }
    DatasetTable > .dataset-table--muted { color: $text-muted; }
    """

    cursor: reactive[int] = reactive(0, always_update=False, init=False)

    class Highlighted(Message):
        """The cursor moved to another item (or to none: `item` is None)."""

        def __init__(self, table: "DatasetTable", item: Item | None) -> None:
            super().__init__()
            self.table = table
            self.item = item

        @property
        def control(self) -> "DatasetTable":
            return self.table

    class Selected(Message):
        """A double click on the current item: the user wants to edit it (enter and `e` are the pane's)."""

        def __init__(self, table: "DatasetTable", item: Item) -> None:
            super().__init__()
            self.table = table
            self.item = item

    def __init__(self, *, empty_text: str = "no images", id: str | None = None) -> None:
        super().__init__(id=id)
        self.items: list[Item] = []
        self.empty_text = empty_text
        self._cache: LRUCache[tuple, Strip] = LRUCache(256)
        self._widths: tuple[int, ...] = ()
        self._concept_width = 7
        self._base_style: Style | None = None

    # --- data --------------------------------------------------------------------------------
    @property
    def current(self) -> Item | None:
        return self.items[self.cursor] if 0 <= self.cursor < len(self.items) else None

    def set_items(self, items: Sequence[Item], keep: Item | None = None) -> None:
        """Replace the shown items; the cursor stays on `keep` (default: the current item) if it is still shown."""
        keep = keep if keep is not None else self.current
        self.items = list(items)
        labels = {it.concept for it in self.items}
        self._concept_width = max(7, min(14, max((cell_len(c) for c in labels), default=7)))
        index = 0
        if keep is not None:
            path = keep.path
            for i, it in enumerate(self.items):
                if it.path == path:
                    index = i
                    break
        self._cache.clear()
        self.virtual_size = Size(self.size.width, len(self.items) + 1)
        old = self.cursor
        self.set_reactive(DatasetTable.cursor, min(index, max(0, len(self.items) - 1)))
        self._scroll_to_cursor()
        self.call_after_refresh(self._scroll_to_cursor)
        self.refresh()
        if self.current is not keep or old != self.cursor or keep is None:
            self.post_message(self.Highlighted(self, self.current))

    def refresh_items(self) -> None:
        """Repaint after items changed in place (a caption saved, a flag cleared)."""
        self._cache.clear()
        self.refresh()

    def move_to(self, item: Item) -> bool:
        for i, it in enumerate(self.items):
            if it.path == item.path:
                self.cursor = i
                return True
        return False

    # --- cursor ------------------------------------------------------------------------------
    def validate_cursor(self, value: int) -> int:
        return max(0, min(value, len(self.items) - 1)) if self.items else 0

    def watch_cursor(self, old: int, new: int) -> None:
        self._scroll_to_cursor()
        self.call_after_refresh(self._scroll_to_cursor)  # the virtual size may not be laid out yet
        self.refresh()
        self.post_message(self.Highlighted(self, self.current))

    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 2)

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.scrollable_content_region.height - 1)  # minus the header line
        top = int(self.scroll_y)
        if self.cursor < top:
            self.scroll_to(y=self.cursor, animate=False, immediate=True)
        elif self.cursor >= top + visible:
            self.scroll_to(y=self.cursor - visible + 1, animate=False, immediate=True)

    def action_cursor(self, delta: int) -> None:
        self.cursor += delta

    def action_page(self, direction: int) -> None:
        self.cursor += direction * self._page()

    def action_jump(self, index: int) -> None:
        self.cursor = index if index >= 0 else len(self.items) - 1

    def action_select(self) -> None:
        if self.current is not None:
            self.post_message(self.Selected(self, self.current))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y == 0:
            return
        row = int(self.scroll_y) + offset.y - 1
        if 0 <= row < len(self.items):
            if row == self.cursor and event.chain >= 2:
                self.action_select()
            self.cursor = row

    def on_resize(self, event: events.Resize) -> None:
        self._cache.clear()
        self.virtual_size = Size(event.size.width, len(self.items) + 1)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._base_style = None
        self._cache.clear()

    def on_focus(self) -> None:
        self._cache.clear()
        self.refresh()

    def on_blur(self) -> None:
        self._cache.clear()
        self.refresh()

    # --- rendering ---------------------------------------------------------------------------
    def _column_widths(self, width: int) -> tuple[int, ...]:
        concept, size, flags = self._concept_width, 9, 16
        rest = max(0, width - concept - size - flags - 4)  # four one-cell gaps
        file = max(10, min(40, rest // 2))
        caption = max(0, rest - file)
        return file, concept, size, caption, flags

    def _style(self, name: str) -> Style:
        return self.get_component_rich_style(name, partial=True)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        widths = self._column_widths(width)
        if widths != self._widths:
            self._widths = widths
            self._cache.clear()
        base = self._base_style
        if base is None:  # looking the style up costs more than drawing a cached line
            base = self._base_style = self.rich_style
        if y == 0:
            key = ("header", width)
            strip = self._cache.get(key)
            if strip is None:
                text = " ".join(fit(name, w) for name, w in zip(COLUMNS, widths))
                strip = Strip([Segment(fit(text, width), base + self._style("dataset-table--header"))], width)
                self._cache[key] = strip
            return strip
        row = int(self.scroll_y) + y - 1
        if not self.items:
            if y == 1:
                return Strip([Segment(fit(" " + self.empty_text, width), base + self._style("dataset-table--muted"))],
                             width)
            return Strip.blank(width, base)
        if row >= len(self.items):
            return Strip.blank(width, base)
        is_cursor = row == self.cursor
        key = (row, is_cursor, self.has_focus, width)
        strip = self._cache.get(key)
        if strip is None:
            strip = self._render_row(self.items[row], widths, width, is_cursor, base)
            self._cache[key] = strip
        return strip

    def _render_row(self, item: Item, widths: tuple[int, ...], width: int, is_cursor: bool, base: Style) -> Strip:
        w_file, w_concept, w_size, w_caption, w_flags = widths
        size = f"{item.width}x{item.height}" if item.width else "?"
        caption = item.caption if item.caption is not None else "—"
        flags = short_flags(item.flags)
        row_style = base
        if is_cursor:
            row_style = base + self._style("dataset-table--cursor" if self.has_focus else "dataset-table--cursor-blurred")
        flag_style = row_style + self._style("dataset-table--unusable" if not item.usable else "dataset-table--flagged")
        muted = row_style + self._style("dataset-table--muted")
        segments = [
            Segment(fit_end(item.rel, w_file) + " ", row_style),
            Segment(fit(item.concept, w_concept) + " ", muted if not is_cursor else row_style),
            Segment(fit(size, w_size) + " ", muted if not is_cursor else row_style),
            Segment(fit(caption, w_caption) + " ", row_style if item.caption is not None else muted),
            Segment(fit(flags, w_flags), flag_style),
        ]
        used = sum(widths) + 4
        if used < width:
            segments.append(Segment(" " * (width - used), row_style))
        return Strip(segments).crop(0, width)
