"""A live view of a (possibly huge, still growing) log file: toolong's model, plus rotation and `\\r`.

How it stays fast and small:

- The file is a list of newline byte offsets (`array('Q')`, 8 bytes a line); lines are read on demand
  with `os.pread` and only the visible ones are rendered (Line API on a `ScrollView`, small LRU caches).
- The index is built **backwards from the end, lazily**: a thread first scans just enough of the tail to
  fill the screen (so a 1 GB log paints at once), then a bounded budget more (`AUTO_INDEX_BYTES`); older
  parts are indexed only when the user scrolls near the top of what is indexed (or presses `home`,
  which then stays on line 1 while the lines above what was indexed come in).
  Memory therefore grows with what was looked at, not with the file.
- The same thread polls the file (fstat on the open fd; no inotify, so NFS works) for appended data.
  A file that shrank (truncated) or whose path now names another inode (rotated) is scanned afresh.
- The thread never touches the index the UI reads: it leaves results in a locked mailbox and posts one
  `LogView.Changed` message, which coalesces (`can_replace`) while the UI is busy; the handler applies them.

Display rules: a half-written last line is shown and updated as it grows; a `\\r` inside a line overprints
it the way a terminal would (`10%\\r20%` shows `20%`), and `\\r\\n` endings are plain line ends; ANSI colour
codes are honoured. Follow mode (`f`) keeps the last line in view; scrolling up turns it off, reaching the
end turns it back on.

Long lines (a traceback line, a long warning): by default a line is one row, cut at the right edge, and
←/→ scroll sideways `SIDEWAYS` columns a press (shift+←/→ half a screen, ctrl+pageup/pagedown a screen;
the subtitle says when lines are cut). `W` wraps them instead, at spaces (a longer word is folded).

Wrapped, the position is `(line, row)`: the top line and how many of its wrapped rows are above the top
edge (following: the last row sits at the bottom). ↑/↓, the wheel and pages move it by screen rows,
wrapping only the lines they pass, so the height of the whole file in rows is never computed. `scroll_y`
then only drives the scrollbar: its range is the lines above the tail's screen at an estimated height
(`_estimate`: the byte lengths of a fixed sample of lines, from the index, nothing read) plus the tail's
rows, exact; a position maps into it linearly within each line, and a dragged scrollbar maps back the
same way.
"""
from __future__ import annotations

import os
import threading
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path

from rich.style import Style
from rich.text import Text
from textual import work
from textual.actions import SkipAction
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tui.actions import bindings

TAIL_CHUNK = 64 * 1024  # first read from the end
BACK_CHUNK = 4 * 1024 * 1024  # later backward reads
FORWARD_CHUNK = 16 * 1024 * 1024  # at most this much new data per poll
AUTO_INDEX_BYTES = 16 * 1024 * 1024  # indexed in the background without being asked
MIN_TAIL_LINES = 400  # the first scan goes on until it has this many lines (or the start)
MAX_LINE_BYTES = 16 * 1024  # a longer line is shown cut, with "…"
ESTIMATE_SAMPLE = 64  # wrapped: lines sampled (32 to 64) to estimate the rows of those above the screen
SIDEWAYS = 8  # columns a ←/→ press scrolls a cut line (less and toolong move several, not one)
POLL_SECONDS = 0.25
SMALL_SCAN = 256 * 1024  # up to this many bytes, newlines are found without numpy


def newline_offsets(data: bytes, base: int) -> array:
    """Absolute offsets of every b"\\n" in `data` (which starts at file offset `base`), ascending.

    Small reads (the first tail scan, appended lines) use `bytes.find`; big ones numpy, imported only
    then, so its import (~0.4 s cold) never delays the first paint."""
    if len(data) <= SMALL_SCAN:
        out, pos = array("Q"), data.find(b"\n")
        while pos >= 0:
            out.append(base + pos)
            pos = data.find(b"\n", pos + 1)
        return out
    import numpy as np

    found = np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10).astype(np.uint64)
    if base:
        found += np.uint64(base)
    out = array("Q")
    out.frombytes(found.tobytes())
    return out


def _reversed(a: array) -> array:
    out = array("Q", a)
    out.reverse()
    return out


def overprint(text: str) -> str:
    """What a terminal shows for a line with carriage returns: each segment overwrites the line's start."""
    text = text.rstrip("\r")
    if "\r" not in text:
        return text
    shown = ""
    for seg in text.split("\r"):
        shown = seg + shown[len(seg):]
    return shown


class LineIndex:
    """Newline offsets of the indexed part of a file: `[low, end)`.

    `_back` holds offsets found by scanning backwards (descending, so extending it is cheap), `_fwd`
    those found after the first scan point (ascending). Until `low` reaches 0 the bytes before the first
    indexed newline are not a line (their start is unknown), so they are not shown.
    """

    def __init__(self, end: int = 0):
        self.low = end
        self.end = end
        self._back = array("Q")
        self._fwd = array("Q")

    @property
    def complete(self) -> bool:
        return self.low == 0

    @property
    def newlines(self) -> int:
        return len(self._back) + len(self._fwd)

    @property
    def nbytes(self) -> int:
        """Memory held by the offsets."""
        return (len(self._back) + len(self._fwd)) * 8

    def _nl(self, k: int) -> int:
        nb = len(self._back)
        return self._back[nb - 1 - k] if k < nb else self._fwd[k - nb]

    def add_back(self, descending: array, low: int) -> int:
        """Offsets found below `low`, in descending order; returns how many lines were added above."""
        before = self.line_count
        self._back.extend(descending)
        self.low = low
        return self.line_count - before

    def add_forward(self, ascending: array, end: int) -> None:
        self._fwd.extend(ascending)
        self.end = end

    @property
    def line_count(self) -> int:
        n = self.newlines
        first = 0 if self.complete else 1  # newlines used up as "the start of line 0"
        if n == 0:
            return 1 if (self.complete and self.end > 0) else 0
        starts = n + 1 - first
        last_start = self._nl(n - 1) + 1
        return starts - (1 if last_start >= self.end else 0)

    def span(self, i: int) -> tuple[int, int]:
        """Byte range of line `i` (without its newline)."""
        n = self.newlines
        if self.complete:
            start = 0 if i == 0 else self._nl(i - 1) + 1
            end = self._nl(i) if i < n else self.end
        else:
            start = self._nl(i) + 1
            end = self._nl(i + 1) if i + 1 < n else self.end
        return start, end


@dataclass
class _Mailbox:
    """What the watcher thread found since the UI last looked (guarded by `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    reset: tuple[int, int] | None = None  # (fd, end) of a freshly opened file
    back: list[tuple[array, int]] = field(default_factory=list)
    fwd: array = field(default_factory=lambda: array("Q"))
    end: int | None = None
    missing: bool = False
    notified: bool = False


class LogView(ScrollView, can_focus=True):
    """Follows a log file; see the module docstring."""

    DEFAULT_CSS = """
    LogView {
        background: $surface;
        border: round $primary 40%;
        border-title-color: $text-muted;
        border-subtitle-color: $text-muted;
    }
    LogView:focus { border: round $primary; }
    """

    ACTION_SCOPE = "log"
    BINDINGS = bindings("log")

    follow: reactive[bool] = reactive(True)
    wrap: reactive[bool] = reactive(False, init=False)

    class Changed(Message):
        """The watcher thread left news in the mailbox (coalesces while the UI is busy)."""

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, LogView.Changed)

    class FollowChanged(Message):
        def __init__(self, log_view: "LogView", follow: bool) -> None:
            super().__init__()
            self.log_view = log_view
            self.follow = follow

    def __init__(self, path: str | os.PathLike, *, poll: float = POLL_SECONDS, name: str | None = None,
                 id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.path = Path(path)
        self.poll = poll
        self.index = LineIndex()
        self._fd = -1  # the UI's dup, for reading lines
        self._thread_fd = -1  # the watcher thread's own
        self._generation = 0
        self._mailbox = _Mailbox()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._want_back = threading.Event()
        self._want_all = False
        self._home = False  # `home` was pressed: stay on line 1 while older lines are still being indexed
        self._missing = False
        self._max_width = 0
        self._text_cache: OrderedDict[tuple[int, int, int], Text] = OrderedDict()
        self._strip_cache: OrderedDict[tuple[int, int, int, int, int], Strip] = OrderedDict()
        self._wrap_cache: OrderedDict[tuple[int, int, int, int], list[Strip]] = OrderedDict()
        self._frame: tuple[tuple, list[Strip]] | None = None  # wrap mode: the screen's rows, as last laid out
        self._anchor: tuple[int, int] = (0, 0)  # wrap mode, not following: (top line, its rows above the top)
        self._syncing = False  # wrap mode: scroll_y is being set from the anchor (not a scrollbar drag)
        self.border_title = self.path.name

    # --- lifecycle ------------------------------------------------------------------------------
    def on_mount(self) -> None:
        super().on_mount()
        self._update_subtitle()
        self._watch_file()

    def on_unmount(self) -> None:
        self._stop.set()
        self._wake.set()
        # The thread closes its own fd (and any dup the UI never adopted) as it leaves.
        _close(self._fd)
        self._fd = -1

    # --- the watcher thread -----------------------------------------------------------------------
    @work(thread=True, exclusive=True, group="log-watch", exit_on_error=False)
    def _watch_file(self) -> None:
        # The thread reads through its own fd; the UI gets a dup of it with each reset, so neither side
        # ever reads through a descriptor the other closed (and whose number may have been reused).
        box = self._mailbox
        try:
            self._watch_loop(box)
        finally:
            _close(self._thread_fd)
            self._thread_fd = -1
            with box.lock:  # a dup the UI never adopted
                if box.reset is not None and self._stop.is_set():
                    _close(box.reset[0])
                    box.reset = None

    def _watch_loop(self, box: _Mailbox) -> None:
        low = end = 0
        auto_left = AUTO_INDEX_BYTES
        while not self._stop.is_set():
            fd = self._thread_fd
            if fd < 0:
                fd = self._thread_fd = self._open()
                if fd < 0:
                    with box.lock:
                        box.missing = True
                    self._notify()
                    self._wake.wait(self.poll)
                    self._wake.clear()
                    continue
                end = low = os.fstat(fd).st_size
                auto_left = AUTO_INDEX_BYTES
                with box.lock:
                    if box.reset is not None:
                        _close(box.reset[0])
                    box.reset, box.back, box.fwd, box.end, box.missing = \
                        (os.dup(fd), end), [], array("Q"), None, False
                # The tail first, until there are enough lines to fill a screen.
                found = 0
                while low > 0 and found < MIN_TAIL_LINES and not self._stop.is_set():
                    low, n = self._scan_back(fd, low, TAIL_CHUNK if found == 0 else BACK_CHUNK)
                    found += n
                auto_left -= end - low
                self._notify()
            # Growth, truncation, rotation.
            try:
                size = os.fstat(fd).st_size
                rotated = self._rotated(fd)
            except OSError:
                size, rotated = -1, True
            if rotated or size < end:
                _close(fd)
                self._thread_fd = -1
                continue
            if size > end:
                stop = min(size, end + FORWARD_CHUNK)
                data = os.pread(fd, stop - end, end)
                offsets = newline_offsets(data, end)
                end += len(data)
                with box.lock:
                    box.fwd.extend(offsets)
                    box.end = end
                self._notify()
                if end < size:
                    continue  # more to read: no sleep
            # Older lines: a bounded budget on our own, the rest only when the user asks.
            if low > 0 and (auto_left > 0 or self._want_back.is_set() or self._want_all):
                before = low
                low, _ = self._scan_back(fd, low, BACK_CHUNK)
                auto_left -= before - low
                self._want_back.clear()
                self._notify()
                continue
            self._wake.wait(self.poll)
            self._wake.clear()

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDONLY)
        except OSError:
            return -1

    def _rotated(self, fd: int) -> bool:
        try:
            return os.stat(self.path).st_ino != os.fstat(fd).st_ino
        except FileNotFoundError:
            return False  # renamed away and not yet recreated: keep reading the old file

    def _scan_back(self, fd: int, low: int, chunk: int) -> tuple[int, int]:
        start = max(0, low - chunk)
        data = os.pread(fd, low - start, start)
        offsets = newline_offsets(data, start)
        with self._mailbox.lock:
            self._mailbox.back.append((_reversed(offsets), start))
        return start, len(offsets)

    def _notify(self) -> None:
        box = self._mailbox
        with box.lock:
            if box.notified:
                return
            box.notified = True
        self.post_message(self.Changed())

    # --- applying news (UI thread) ----------------------------------------------------------------
    def on_log_view_changed(self, event: Changed) -> None:
        event.stop()
        self.apply_pending()

    def apply_pending(self) -> None:
        box = self._mailbox
        with box.lock:
            reset, back, fwd, end, missing = box.reset, box.back, box.fwd, box.end, box.missing
            box.reset, box.back, box.fwd, box.end, box.notified = None, [], array("Q"), None, False
        if reset is not None:
            fd, size = reset
            _close(self._fd)
            self._fd = fd
            self._generation += 1
            self.index = LineIndex(size)
            self._clear_caches()
            self._max_width = 0
            self._anchor = (0, 0)
            self._home = False
            self.follow = True  # a new or truncated file: its tail is what matters
        self._missing = missing and reset is None and self._fd < 0
        added_above = 0
        for offsets, low in back:
            added_above += self.index.add_back(offsets, low)
        # After `home`, lines indexed above are the ones the user asked for: the view stays on the first
        # line (instead of keeping the line it showed) until it leaves the top or the start is indexed.
        home = self._home and (self._anchor == (0, 0) if self.wrap else self.scroll_y == 0)
        self._home = home and not self.index.complete
        if end is not None:
            self.index.add_forward(fwd, end)
            # The old last line may have grown: its caches are keyed by its byte span, so its old
            # rendering is simply never asked for again; only the laid-out screen is stale.
            self._frame = None
        if self.wrap:
            if added_above and not home:
                line, row = self._anchor
                self._anchor = (line + added_above, row)
            self._update_virtual_size()
            self._sync_y()
        else:
            self._update_virtual_size()
            if self.follow:
                self.scroll_to(y=self.max_scroll_y, animate=False, force=True)
            elif added_above and not home:
                self.scroll_to(y=self.scroll_y + added_above, animate=False, force=True)
        self._update_subtitle()
        self.refresh()
        # Textual moves the scrollbar thumb only if the bar is already shown; a file that just grew past
        # one screen gets its bar at the next layout, with the thumb at the top. Put it where we are.
        self.call_after_refresh(self._sync_scrollbar)

    def _sync_scrollbar(self) -> None:
        if self.show_vertical_scrollbar and self.vertical_scrollbar.position != self.scroll_y:
            self.vertical_scrollbar.position = self.scroll_y

    def _clear_caches(self) -> None:
        self._text_cache.clear()
        self._strip_cache.clear()
        self._wrap_cache.clear()
        self._frame = None

    def _update_virtual_size(self) -> None:
        if self.wrap:
            width, height = self._wrap_dims()
            tail, rows = self._tail(width, height)
            # Estimated rows above the tail's screen, then that screen's rows exactly (module docstring).
            syncing, self._syncing = self._syncing, True  # a shorter range clamps scroll_y: not a drag
            try:
                self.virtual_size = Size(width, self._tail_base(tail, width) + rows + height)
            finally:
                self._syncing = syncing
        else:
            self.virtual_size = Size(max(self._max_width, 1), self.index.line_count)
        self._update_subtitle()

    def watch_show_horizontal_scrollbar(self, shown: bool) -> None:
        # A first long line brings the horizontal scrollbar: one row less to see, and Textual keeps
        # scroll_y, which would hide the newest line under the bar while the subtitle says "following".
        if self.follow:
            self.call_after_refresh(self._pin_end)

    def watch_show_vertical_scrollbar(self, shown: bool) -> None:
        if self.wrap:  # two columns more or less: lines wrap differently, the tail's top line moves
            self.call_after_refresh(self._rewrap)

    def _rewrap(self) -> None:
        if self.wrap:
            self._frame = None
            self._update_virtual_size()
            self._sync_y()
            self.refresh()

    def _pin_end(self) -> None:
        if self.wrap:
            self._rewrap()
        elif self.follow and self.scroll_y != self.max_scroll_y:
            self.scroll_to(y=self.max_scroll_y, animate=False, force=True)
            self.call_after_refresh(self._sync_scrollbar)

    def _update_subtitle(self) -> None:
        if self._missing or (self._fd < 0 and self.index.end == 0):
            self.border_subtitle = "waiting for the file…"
            return
        parts = [_size(self.index.end)]
        if not self.index.complete:
            parts.append(f"last {_size(self.index.end - self.index.low)} indexed")
        parts.append("following" if self.follow else "paused · f follows")
        if self.wrap:
            parts.append("wrapped")
        elif self._max_width > self.scrollable_content_region.width > 0:
            parts.append("long lines cut: W wraps, ←/→ scroll")
        self.border_subtitle = " · ".join(parts)

    # --- reading and rendering lines --------------------------------------------------------------
    def line_text(self, i: int) -> Text:
        """Line `i` as shown (overprinted, tabs expanded, ANSI colours applied), from a small LRU."""
        start, end = self.index.span(i)
        key = (self._generation, start, end)
        cached = self._text_cache.get(key)
        if cached is not None:
            self._text_cache.move_to_end(key)
            return cached
        length = min(end - start, MAX_LINE_BYTES)
        try:
            raw = os.pread(self._fd, length, start) if length > 0 else b""
        except OSError:
            raw = b""
        plain = overprint(raw.decode("utf-8", errors="replace"))
        if end - start > MAX_LINE_BYTES:
            plain += "…"
        if "\x1b" in plain:
            text = Text.from_ansi(plain, no_wrap=True, end="")
        else:
            text = Text(plain, no_wrap=True, end="", style=_line_style(plain))
        text.expand_tabs(8)
        self._text_cache[key] = text
        if len(self._text_cache) > 512:
            self._text_cache.popitem(last=False)
        return text

    def render_line(self, y: int) -> Strip:
        if self.wrap:
            return self._render_wrapped(y)
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        base = self.rich_style
        if index >= self.index.line_count or self._fd < 0:
            return Strip.blank(width, base)
        start, end = self.index.span(index)
        key = (self._generation, start, end, scroll_x, width)
        strip = self._strip_cache.get(key)
        if strip is None:
            text = self.line_text(index)
            if text.cell_len > self._max_width:
                self._max_width = text.cell_len
                self.call_later(self._update_virtual_size)  # and the subtitle: lines are cut
            strip = Strip(text.render(self.app.console), text.cell_len)
            strip = strip.crop_extend(scroll_x, scroll_x + width, base).apply_style(base)
            self._strip_cache[key] = strip
            if len(self._strip_cache) > 1024:
                self._strip_cache.popitem(last=False)
        else:
            self._strip_cache.move_to_end(key)
        if index < 200 and not self.index.complete:
            self._want_back.set()  # near the top of what is indexed: fetch older lines
            self._wake.set()
        return strip

    # --- wrap mode ------------------------------------------------------------------------------------
    def _wrapped(self, index: int, width: int) -> list[Strip]:
        """Line `index` wrapped into rows of `width` cells (at least one row), from a small LRU."""
        start, end = self.index.span(index)
        key = (self._generation, start, end, width)
        rows = self._wrap_cache.get(key)
        if rows is not None:
            self._wrap_cache.move_to_end(key)
            return rows
        text = self.line_text(index)
        console = self.app.console
        if text.cell_len <= width:
            pieces = [Strip(text.render(console), text.cell_len)]
        else:  # at spaces, like a reader expects; a word longer than the row is folded
            pieces = [Strip(line.render(console), line.cell_len)
                      for line in text.wrap(console, width, overflow="fold", no_wrap=False)]
        base = self.rich_style
        rows = [piece.crop_extend(0, width, base).apply_style(base) for piece in pieces or [Strip([])]]
        self._wrap_cache[key] = rows
        if len(self._wrap_cache) > 512:
            self._wrap_cache.popitem(last=False)
        return rows

    def _rows(self, index: int, width: int) -> int:
        return len(self._wrapped(index, width))

    def _wrap_dims(self) -> tuple[int, int]:
        region = self.scrollable_content_region
        # Wrapped, nothing is wider than the view: a sideways scrollbar still shown is about to go.
        return max(1, region.width), max(1, region.height + self.scrollbar_size_horizontal)

    def _estimate(self, width: int) -> float:
        """Rows a line takes on average, from the byte lengths of a sample of lines spread over the file
        (the index alone, nothing read): every 2**k-th line, so the sample stays put as the file grows."""
        n = self.index.line_count
        step = 1 << (n // ESTIMATE_SAMPLE).bit_length()
        rows = count = 0
        for i in range(0, n, step):
            start, end = self.index.span(i)
            rows += max(1, -(-min(end - start, MAX_LINE_BYTES) // width))
            count += 1
        return rows / count if count else 1.0

    def _tail_base(self, tail: int, width: int) -> int:
        """The scroll range above line `tail` (the top line of the tail's screen): an estimate."""
        return ceil(tail * self._estimate(width))

    def _tail(self, width: int, height: int) -> tuple[int, int]:
        """The position that shows the file's end at the bottom: (top line, its rows above the top)."""
        rows, i = 0, self.index.line_count - 1
        while i >= 0:
            rows += self._rows(i, width)
            if rows >= height:
                return i, rows - height
            i -= 1
        return 0, 0

    def _position(self) -> tuple[int, int]:
        """Where the view is: (top line, its rows above the top edge); the tail's when following."""
        return self._tail(*self._wrap_dims()) if self.follow else self._anchor

    @property
    def top_line(self) -> int:
        """The line at the top of the view (wrapped, perhaps only its last rows show)."""
        if not self.wrap:
            return int(self.scroll_y)
        return min(self._position()[0], max(0, self.index.line_count - 1))

    def _sync_y(self) -> None:
        """Put scroll_y (the scrollbar; nothing else reads it wrapped) where the position maps to."""
        if not self.wrap:
            return
        width, height = self._wrap_dims()
        if self.follow:
            y = self.max_scroll_y
        else:
            tail, tail_row = self._tail(width, height)
            line, row = self._anchor
            if line >= tail:
                y = self._tail_base(tail, width) + min(row, tail_row)
            else:
                k = self._rows(line, width)
                y = (line + min(row, k - 1) / k) * self._estimate(width)
        self._syncing = True
        try:
            self.scroll_target_y = self.scroll_y = y
        finally:
            self._syncing = False
        self.call_after_refresh(self._sync_scrollbar)

    def _seek(self, y: float) -> None:
        """The scrollbar was dragged (or Textual moved scroll_y): go where `y` maps to."""
        width, height = self._wrap_dims()
        tail, tail_row = self._tail(width, height)
        base = self._tail_base(tail, width)
        if y >= self.max_scroll_y:
            self.follow = True
        else:
            if y >= base:
                self._anchor = (tail, min(int(y - base), tail_row))
            else:
                est = self._estimate(width)
                line = min(int(y / est), tail)
                k = self._rows(line, width)
                self._anchor = (line, min(k - 1, int((y / est - line) * k)))
            self.follow = False
        self.refresh()

    def _move_rows(self, delta: int) -> bool:
        """Move the wrapped view `delta` screen rows (down if positive), wrapping only the lines passed.

        Reaching the end follows again; leaving it stops following. Returns whether it moved."""
        n = self.index.line_count
        if n == 0 or self._fd < 0 or delta == 0 or (delta > 0 and self.follow):
            return False
        width, height = self._wrap_dims()
        line, row = self._position()
        line = min(line, n - 1)
        row = min(row, self._rows(line, width) - 1)
        start = (line, row)
        row += delta
        if delta < 0:
            while row < 0 and line > 0:
                line -= 1
                row += self._rows(line, width)
            row = max(row, 0)
        else:
            while line < n - 1 and row >= (k := self._rows(line, width)):
                row -= k
                line += 1
            row = min(row, self._rows(line, width) - 1)
        if (line, row) == start:
            return False
        if (line, row) >= self._tail(width, height):
            self.follow = True
        else:
            self._anchor = (line, row)
            self.follow = False
        self._sync_y()
        self.refresh()
        return True

    def _layout(self, width: int, height: int) -> list[Strip]:
        """The rows on screen: from the position down, or, following (or when the file ends above the
        bottom edge), from the last line up, so the newest line is at the bottom."""
        n = self.index.line_count
        key = (self._generation, self.index.low, self.index.end, n, width, height, self.follow, self._anchor)
        if self._frame is not None and self._frame[0] == key:
            return self._frame[1]
        rows: list[Strip] = []
        top = 0
        if not self.follow and n:
            top, row = min(self._anchor[0], n - 1), self._anchor[1]
            first = self._wrapped(top, width)
            rows = first[min(row, len(first) - 1):]
            i = top + 1
            while i < n and len(rows) < height:
                rows.extend(self._wrapped(i, width))
                i += 1
        if self.follow or len(rows) < height:
            rows = []
            i = n - 1
            while i >= 0 and len(rows) < height:
                rows[:0] = self._wrapped(i, width)
                i -= 1
            if len(rows) > height:
                rows = rows[-height:]
            top = i + 1
        rows = rows[:height]
        self._frame = (key, rows)
        if top < 200 and not self.index.complete:
            self._want_back.set()
            self._wake.set()
        return rows

    def _render_wrapped(self, y: int) -> Strip:
        region = self.scrollable_content_region
        width, height = region.width, region.height
        if self._fd < 0 or width <= 0:
            return Strip.blank(max(width, 0), self.rich_style)
        rows = self._layout(width, height)
        return rows[y] if y < len(rows) else Strip.blank(width, self.rich_style)

    def watch_wrap(self, wrap: bool) -> None:
        self._frame = None
        if wrap:  # the top line stays on top (or, following, the end at the bottom)
            self._anchor = (int(self.scroll_y), 0)
            self.scroll_to(x=0, animate=False, force=True)
            self._update_virtual_size()
            self._sync_y()
        else:
            top = self._anchor[0]
            self._update_virtual_size()
            y = self.max_scroll_y if self.follow else min(top, self.max_scroll_y)
            self.scroll_to(y=y, animate=False, force=True)
        self.refresh()
        self.call_after_refresh(self._sync_scrollbar)

    def action_toggle_wrap(self) -> None:
        self.wrap = not self.wrap

    # Wrapped, Textual's scrolling (which moves scroll_y, a line number there) becomes row moves.
    def scroll_up(self, **kwargs) -> None:
        if self.wrap:
            self._move_rows(-1)
        else:
            super().scroll_up(**kwargs)

    def scroll_down(self, **kwargs) -> None:
        if self.wrap:
            self._move_rows(1)
        else:
            super().scroll_down(**kwargs)

    def scroll_page_up(self, **kwargs) -> None:
        if self.wrap:
            self._move_rows(-self._wrap_dims()[1])
        else:
            super().scroll_page_up(**kwargs)

    def scroll_page_down(self, **kwargs) -> None:
        if self.wrap:
            self._move_rows(self._wrap_dims()[1])
        else:
            super().scroll_page_down(**kwargs)

    def _scroll_up_for_pointer(self, **kwargs) -> bool:  # the mouse wheel
        if self.wrap:
            return self._move_rows(-max(1, round(self.app.scroll_sensitivity_y)))
        return super()._scroll_up_for_pointer(**kwargs)

    def _scroll_down_for_pointer(self, **kwargs) -> bool:
        if self.wrap:
            return self._move_rows(max(1, round(self.app.scroll_sensitivity_y)))
        return super()._scroll_down_for_pointer(**kwargs)

    # --- sideways (lines cut) -------------------------------------------------------------------------
    def _sideways(self, columns: int) -> None:
        if not self.allow_horizontal_scroll:
            raise SkipAction()  # nothing is cut (or wrapped): let the key go to the screen
        self.scroll_to(x=self.scroll_x + columns, animate=False)

    def action_scroll_left(self) -> None:
        self._sideways(-SIDEWAYS)

    def action_scroll_right(self) -> None:
        self._sideways(SIDEWAYS)

    def action_scroll_half(self, direction: int) -> None:
        """Half a screen sideways: `direction` -1 is left, 1 right."""
        self._sideways(direction * max(SIDEWAYS, self.scrollable_content_region.width // 2))

    # --- follow mode ------------------------------------------------------------------------------
    def on_resize(self) -> None:
        if self.wrap:  # a new width wraps differently, a new height shows more or fewer rows
            self._rewrap()
            return
        # Shorter now (a panel above or beside it grew, the terminal shrank): Textual keeps scroll_y,
        # which would leave the newest lines below the bottom edge while the subtitle says "following".
        if self.follow:
            self.scroll_to(y=self.max_scroll_y, animate=False, force=True)
            self.call_after_refresh(self._sync_scrollbar)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self.wrap:
            if not self._syncing:
                self._seek(new_value)
            return
        at_end = round(new_value) >= self.max_scroll_y
        if at_end != self.follow:
            self.follow = at_end

    def watch_follow(self, follow: bool) -> None:
        self._update_subtitle()
        self.post_message(self.FollowChanged(self, follow))

    def action_toggle_follow(self) -> None:
        if self.follow:
            if self.wrap:  # paused where it is: the tail's screen
                self._anchor = self._tail(*self._wrap_dims())
            self.follow = False
        else:
            self.action_scroll_end()

    def action_scroll_end(self) -> None:
        self.follow = True
        if self.wrap:
            self._sync_y()
            self.refresh()
        else:
            self.scroll_to(y=self.max_scroll_y, animate=False, force=True)

    def action_scroll_home(self) -> None:
        self.follow = False
        self._want_all = True  # the user asked for the start: index all of it
        self._home = not self.index.complete
        self._wake.set()
        if self.wrap:
            self._anchor = (0, 0)
            self._sync_y()
            self.refresh()
        else:
            self.scroll_to(y=0, animate=False, force=True)


def _close(fd: int) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass


def _line_style(plain: str) -> Style | str:
    head = plain[:200]
    if head.startswith("Traceback") or "Error" in head or "error:" in head.lower():
        return "red"
    if "warning" in head.lower():
        return "yellow"
    return ""


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"
