"""The preview pane: the selected image, drawn with textual-image in the mode the terminal supports.

Modes: `kitty` (terminal graphics protocol), `sixel`, `halfblock` (coloured half cells, works in any
truecolor terminal, used for snapshots), `none` (no image, just its facts). `auto` asks the terminal
(`tui.graphics_probe`: one write, waits for the terminal's DA1 reply as long as the link needs, at
most 2 s; textual-image's own 0.1 s probe is never used, because over SSH its late reply turned into
keystrokes). With an explicit mode (`--images`, `TUNELAB_IMAGES`, the settings file) nothing is
asked at all. The probe must run before Textual takes over stdin: `prepare_image_mode` is called by
`tunelab` before the app starts.

Thumbnails are made in a worker at the pane's pixel size (`tui.thumbnails`); the UI thread only
swaps a small decoded image in. An image that fails to decode shows a placeholder with the reason.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Center, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Static
from textual.worker import get_current_worker

from tui.screens.error import ReportsWorkerErrors
from tui.thumbnails import Thumbnail, make_thumbnail

IMAGE_MODES = ("auto", "kitty", "sixel", "halfblock", "none")
DEFAULT_CELL = (10, 20)  # pixels per cell when the terminal does not say (textual-image's VT340 default)


class _NotATTY:
    """Stands in for sys.__stdout__ while textual-image is imported, so it does not probe the terminal."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _cell_size_without_asking() -> tuple[int, int]:
    """Cell size in pixels from the TIOCGWINSZ ioctl (never blocks), else the default."""
    try:
        import fcntl
        import struct
        import termios

        out = sys.__stdout__
        if out is not None and out.isatty():
            rows, cols, xpix, ypix = struct.unpack("HHHH", fcntl.ioctl(out.fileno(), termios.TIOCGWINSZ, b"\0" * 8))
            if rows and cols and xpix and ypix:
                return xpix // cols, ypix // rows
    except (OSError, ValueError, ImportError):
        pass
    return DEFAULT_CELL


def _import_textual_image() -> Any:
    """textual-image's widgets, imported so that it asks the terminal nothing (we ask, or were told)."""
    if "textual_image.widget" in sys.modules:
        return sys.modules["textual_image.widget"]
    import textual_image._terminal as terminal

    if not hasattr(terminal.get_cell_size, "_result"):
        terminal.get_cell_size._result = terminal.CellSize(*_cell_size_without_asking())  # type: ignore[attr-defined]
    real = sys.__stdout__
    sys.__stdout__ = _NotATTY(real)  # type: ignore[assignment]
    try:
        import textual_image.widget as widget_module
    finally:
        sys.__stdout__ = real  # type: ignore[assignment]
    return widget_module


def requested_mode(cli: str | None = None, settings: dict[str, Any] | None = None) -> str:
    """The mode asked for: `--images`, else `TUNELAB_IMAGES`, else the settings file, else auto."""
    for value in (cli, os.environ.get("TUNELAB_IMAGES"), (settings or {}).get("images")):
        if value:
            value = str(value).strip().lower()
            if value not in IMAGE_MODES:
                raise ValueError(f"image mode {value!r}: accepted: {', '.join(IMAGE_MODES)}")
            return value
    return "auto"


LAST_PROBE = None  # the `tui.graphics_probe.ProbeResult` of `auto`, for the app to report a silent terminal


def prepare_image_mode(mode: str, timeout: float | None = None) -> str:
    """Resolve `auto` by asking the terminal (only then), import what the mode needs; the concrete mode."""
    global LAST_PROBE
    if mode not in IMAGE_MODES:
        raise ValueError(f"image mode {mode!r}: accepted: {', '.join(IMAGE_MODES)}")
    if mode == "none":
        return mode
    if mode == "auto":
        from tui import graphics_probe

        LAST_PROBE = graphics_probe.probe(graphics_probe.DEFAULT_TIMEOUT if timeout is None else timeout)
        mode = LAST_PROBE.mode
        if LAST_PROBE.cell and _cell_size_without_asking() == DEFAULT_CELL:
            import textual_image._terminal as terminal

            terminal.get_cell_size._result = terminal.CellSize(*LAST_PROBE.cell)  # type: ignore[attr-defined]
    _import_textual_image()
    return mode


def image_widget_class(mode: str) -> type[Widget] | None:
    if mode == "none":
        return None
    module = _import_textual_image()
    return {"kitty": module.TGPImage, "sixel": module.SixelImage}.get(mode, module.HalfcellImage)


def cell_pixels() -> tuple[int, int]:
    if "textual_image._terminal" in sys.modules:
        size = sys.modules["textual_image._terminal"].get_cell_size()
        return size.width, size.height
    return DEFAULT_CELL


class ImagePreview(ReportsWorkerErrors, Vertical):
    """Shows one image (a thumbnail of it) and a line of facts under it."""

    DEFAULT_CSS = """
    ImagePreview { height: 1fr; }
    ImagePreview #preview-frame { height: 1fr; align: center middle; }
    ImagePreview #preview-image { width: auto; height: auto; }
    ImagePreview #preview-placeholder { width: 100%; height: 1fr; content-align: center middle;
        color: $text-muted; text-align: center; }
    ImagePreview #preview-facts { height: 1; color: $text-muted; }
    """

    class Loaded(Message):
        def __init__(self, source: Path, thumbnail: Thumbnail) -> None:
            super().__init__()
            self.source = source
            self.thumbnail = thumbnail

    def __init__(self, project_dir: str | os.PathLike, mode: str = "halfblock", *, delay: float = 0.05,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.project_dir = Path(project_dir)
        self.mode = mode
        self.delay = delay  # while the cursor is held down, only the image it stops on is decoded
        self.source: Path | None = None
        self.last: Thumbnail | None = None
        self._pending: Timer | None = None
        self._image_cls = image_widget_class(mode)
        self._placeholder_text = self._idle_text()

    def compose(self) -> ComposeResult:
        with Center(id="preview-frame"):
            if self._image_cls is not None:
                image = self._image_cls(None, id="preview-image")
                image.display = False
                yield image
            yield Static(self._idle_text(), id="preview-placeholder", markup=False)
        yield Static("", id="preview-facts", markup=False)

    def _idle_text(self) -> str:
        if self.mode == "none":
            return "image preview off (--images none)"
        return "no image selected"

    # --- API ---------------------------------------------------------------------------------
    def show(self, source: Path | None, facts: str = "") -> None:
        """Show an image (None: nothing). Decoding happens in a worker after a short pause."""
        self.query_one("#preview-facts", Static).update(facts, layout=False)  # one line: no re-layout
        if source == self.source:
            return
        self.source = source
        if self._pending is not None:
            self._pending.stop()
            self._pending = None
        if source is None or self._image_cls is None:
            self._placeholder(self._idle_text() if source is None or self.mode == "none" else "")
            return
        self._pending = self.set_timer(self.delay, lambda: self._start(source))

    def _start(self, source: Path) -> None:
        self._pending = None
        if source != self.source:
            return
        self._load(source, self._pixel_box())

    def _pixel_box(self) -> tuple[int, int]:
        frame = self.query_one("#preview-frame")
        w, h = max(frame.size.width, 16), max(frame.size.height, 8)
        if self.mode == "halfblock":
            return w, h * 2
        cw, ch = cell_pixels()
        return w * cw, h * ch

    @work(thread=True, exclusive=True, group="thumbnail", exit_on_error=False)
    def _load(self, source: Path, box: tuple[int, int]) -> None:
        thumb = make_thumbnail(source, self.project_dir, box)
        if not get_current_worker().is_cancelled:
            self.post_message(self.Loaded(source, thumb))

    @on(Loaded)
    def _loaded(self, event: Loaded) -> None:
        event.stop()
        if event.source != self.source:
            return
        self.last = event.thumbnail
        if event.thumbnail.image is None:
            self._placeholder(f"cannot show {event.source.name}:\n{event.thumbnail.error}")
            return
        image = self.query_one("#preview-image")
        image.image = event.thumbnail.image  # type: ignore[attr-defined]
        image.display = True
        self.query_one("#preview-placeholder").display = False

    def _placeholder(self, text: str) -> None:
        if self._image_cls is not None:
            image = self.query_one("#preview-image")
            image.display = False
            image.image = None  # type: ignore[attr-defined]
        placeholder = self.query_one("#preview-placeholder", Static)
        if text != self._placeholder_text:
            self._placeholder_text = text
            placeholder.update(text, layout=False)  # its size is fixed by CSS
        placeholder.display = True
