"""The caption editor: a TextArea for one image's sidecar caption, with save, conflict detection and a token count.

The editor remembers `base`, the caption as it was on disk when loaded or last saved. Saving first
reads the file again: if it changed since (another editor, `tunelab caption`, a sync) and differs
from what is typed, nothing is written and the user chooses in `ConflictScreen` (keep mine, take
theirs, or edit a merge). A change on disk while there are no unsaved edits simply reloads. The
unsaved text stays in the editor until a choice is made, so an edit is never silently dropped and
the other version is never silently overwritten. Writes are atomic (`engine.captions.write_caption`).

A concept whose captions come from project.toml (a metadata template, a fixed text, the file name,
or empty) has no sidecar that training reads, so for its images the editor shows the caption training
will use, read-only, with a note saying where it comes from and how to switch the concept to
hand-written sidecar captions. Typing into a file training ignores would look like an edit and do
nothing — that is what this prevents.

Captions are compared the way training reads them (`decode_caption`: BOM, CRLF and line breaks
normalised), so an editor that only changes line endings does not cause a conflict.

The token count under the caption is exact (`12/77 tokens`) when a run config's base model has its
tokenizer on disk (`project_token_counter`: the first valid config in configs/ whose tokenizer
`tunelab check` would count with), loaded once per project in a worker and then cheap per keystroke
(the `tokenizers` library, a small cache). Until then, or without one (a `tiny` base not built yet, a
single-file base without `model.config`), it is the estimate that errs high, marked `~12/77`.
`TUNELAB_CAPTION_TOKENS=estimate` keeps the estimate (the test suite sets it, so what it shows does
not depend on whether the tiny model has been built).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static, TextArea

from engine.captions import CaptionText, decode_caption, estimate_tokens, with_trigger, write_caption
from engine.project import Item
from tui import actions

CLIP_WINDOW = 77          # CLIP's text window, start and end tokens included
CLIP_CONTENT_TOKENS = 75  # what is left for the caption's own words
TOKENIZER_RETRY_S = 30.0  # a project without a tokenizer on disk is looked at again after this long


def project_token_counter(project_dir: Path) -> tuple[Any, str]:
    """(an `engine.tokencount.TokenCounter`, which base it counts for) from the first valid config in
    the project's configs/ whose base model has its tokenizer on disk; (None, why) otherwise. Reads files:
    call it in a worker."""
    from engine.basemodel import tokenizer_folder
    from engine.config import load_run_config
    from engine.schema import ConfigError
    from engine.tokencount import TokenizerError, load_counter

    if os.environ.get("TUNELAB_CAPTION_TOKENS", "").strip().lower() == "estimate":
        return None, "TUNELAB_CAPTION_TOKENS=estimate"
    why = "no run config in configs/"
    for path in sorted((project_dir / "configs").glob("*.toml")):
        try:
            cfg = load_run_config(path)
        except (ConfigError, OSError, ValueError):
            continue
        folder, why = tokenizer_folder(cfg.model.base, project_dir, cfg.model.config or None)
        if folder is None:
            continue
        try:
            return load_counter(folder), cfg.model.base
        except TokenizerError as e:
            why = str(e)
    return None, why


@dataclass(frozen=True)
class CaptionOrigin:
    """Where a concept's captions come from, as the editor explains it."""

    kind: str = "sidecar"   # engine.project.CaptionSource: sidecar, template, fixed, filename, empty
    concept: str = ""
    detail: str = ""        # the template or the fixed text
    trigger: str = ""

    @property
    def editable(self) -> bool:
        return self.kind == "sidecar"

    def title(self) -> str:
        return {"template": "read-only: from the metadata template", "fixed": "read-only: the concept's fixed text",
                "filename": "read-only: from the file name", "empty": "read-only: empty captions"}.get(self.kind, "caption")

    def note(self) -> str:
        """Why the caption cannot be edited here, and how to make it editable."""
        if self.editable:
            return f"training puts the trigger {self.trigger!r} in front" if self.trigger else ""
        what = {"template": f"the template {self.detail!r}", "fixed": f"the fixed text {self.detail!r}",
                "filename": "the file name", "empty": "nothing (empty captions)"}.get(self.kind, self.kind)
        first = ("b → template writes them as .txt files" if self.kind == "template"
                 else "b → fixed or empty writes .txt files")
        return (f"Concept {self.concept!r} takes its captions from {what} in project.toml, so training "
                f"reads no .txt file for it. To hand-write captions: {first}, then set "
                f"caption = \"sidecar\" for the concept in project.toml.")


def origin_of(concept: Any | None) -> CaptionOrigin:
    """A CaptionOrigin from an `engine.project.Concept` (None: an implicit concept, sidecar captions)."""
    if concept is None:
        return CaptionOrigin()
    detail = concept.template if concept.caption == "template" else (concept.text if concept.caption == "fixed" else "")
    return CaptionOrigin(concept.caption, concept.label, detail, concept.trigger)


def project_of(item: Item) -> Path | None:
    """The project folder of an item (its path without its project-relative part)."""
    depth = len(Path(item.rel).parts)
    path = Path(item.path)
    return path.parents[depth - 1] if 0 < depth <= len(path.parents) else None


def normalise(text: str) -> str:
    return decode_caption(text.encode("utf-8")).text


def read_disk(path: Path) -> str | None:
    """The caption on disk, normalised; None when there is no file."""
    read = read_disk_caption(path)
    return read.text if read is not None else None


def read_disk_caption(path: Path) -> CaptionText | None:
    """The caption on disk with what reading it forgave (its encoding); None when there is no file."""
    try:
        return decode_caption(path.read_bytes())
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


class CaptionEditor(Vertical):
    """Edits the caption of one item at a time."""

    ACTION_SCOPE = "caption"
    BINDINGS = actions.bindings("caption")

    DEFAULT_CSS = """
    CaptionEditor { height: auto; }
    CaptionEditor #caption-title { height: 1; color: $text-muted; }
    CaptionEditor #caption-text { height: 8; }
    CaptionEditor #caption-status { height: 1; }
    CaptionEditor #caption-status.-over { color: $error; }
    CaptionEditor #caption-status.-conflict { color: $warning; text-style: bold; }
    CaptionEditor.-readonly #caption-text { height: 3; }
    CaptionEditor #caption-note { height: auto; max-height: 6; color: $text-muted; }
    CaptionEditor #caption-note.-readonly { color: $warning; }
    """

    class Saved(Message):
        """A caption was written to disk (by a save or a conflict choice)."""

        def __init__(self, item: Item, text: str) -> None:
            super().__init__()
            self.item = item
            self.text = text

    class Navigate(Message):
        """The user asked for the next (+1) or previous (-1) image while editing."""

        def __init__(self, delta: int) -> None:
            super().__init__()
            self.delta = delta

    class Done(Message):
        """The user left the editor (escape)."""

    class TokenizerReady(Message):
        """A worker found (or did not find) the project's tokenizer for exact token counts."""

        def __init__(self, project_dir: Path, counter: Any, source: str) -> None:
            super().__init__()
            self.project_dir, self.counter, self.source = project_dir, counter, source

    class ConflictRaised(Message):
        """The caption on disk changed while there were unsaved edits; the choice dialog is open."""

        def __init__(self, item: Item, mine: str, theirs: str | None) -> None:
            super().__init__()
            self.item = item
            self.mine = mine
            self.theirs = theirs

    def __init__(self, *, cursor_blink: bool = True, id: str | None = None) -> None:
        super().__init__(id=id)
        self.item: Item | None = None
        self.base: str | None = None       # the caption on disk when loaded / last saved (None: no file)
        self.origin = CaptionOrigin()
        self.conflict_open = False
        self.stale = False  # a conflict was put off: the file on disk differs from `base`
        self._after_conflict: list[Callable[[], None]] = []
        self._cursor_blink = cursor_blink
        self.counter: Any = None          # engine.tokencount.TokenCounter for exact counts, once loaded
        self.counter_source = ""          # the base model it counts for
        self._counter_project: Path | None = None
        self._counter_asked = 0.0         # monotonic time of the last look for a tokenizer
        self._counts: dict[str, int] = {}  # caption → exact count (typing back and forth repeats texts)

    def compose(self) -> ComposeResult:
        yield Static("caption", id="caption-title", markup=False)
        area = TextArea("", id="caption-text", soft_wrap=True, show_line_numbers=False,
                        placeholder="no caption: type one, ctrl+s saves")
        area.cursor_blink = self._cursor_blink
        area.disabled = True
        yield area
        yield Static("", id="caption-status", markup=False)
        yield Static("", id="caption-note", markup=False)

    # --- state -------------------------------------------------------------------------------
    @property
    def text_area(self) -> TextArea:
        return self.query_one("#caption-text", TextArea)

    @property
    def text(self) -> str:
        return self.text_area.text

    @property
    def readonly(self) -> bool:
        """The caption comes from project.toml, not from a sidecar file: shown, not edited."""
        return self.item is not None and not self.origin.editable

    @property
    def caption_source(self) -> str:
        return self.origin.kind

    @property
    def dirty(self) -> bool:
        if self.item is None or self.readonly:
            return False
        return normalise(self.text) != (self.base or "")

    @property
    def path(self) -> Path | None:
        return self.item.caption_path if self.item is not None else None

    # --- loading and saving ------------------------------------------------------------------
    def load(self, item: Item | None, origin: CaptionOrigin | None = None) -> None:
        """Show another item's caption; the current one is saved first (a conflict asks first)."""
        origin = origin or CaptionOrigin()
        if item is not None and self.item is not None and item.path == self.item.path and origin == self.origin:
            self.item = item  # the same file after a rescan: keep the text and its undo history
            if self.readonly and self.text != (item.caption or ""):
                self.text_area.load_text(item.caption or "")  # the template or metadata changed
                self._update_status()
            return
        if self.dirty and not self.save():
            if self.conflict_open:  # go on once the user has chosen
                self._after_conflict.append(lambda: self.load(item, origin))
            return
        self.item = item
        self.origin = origin
        if item is not None:
            self._want_counter(project_of(item))
        area = self.text_area
        note = self.query_one("#caption-note", Static)
        note.set_class(False, "-readonly")
        self.set_class(item is not None and not origin.editable, "-readonly")
        if item is None:
            self.base = None
            self.stale = False
            area.read_only = False
            area.load_text("")
            area.disabled = True
            note.update("")
            self.query_one("#caption-title", Static).update("caption", layout=False)
        elif not origin.editable:
            # What training reads, from project.toml; no sidecar is read or written.
            self.base = None
            self.stale = False
            area.load_text(item.caption or "")
            area.read_only = True
            area.disabled = False
            note.set_class(True, "-readonly")
            note.update(origin.note())
            self.query_one("#caption-title", Static).update(origin.title(), layout=False)
        else:
            area.read_only = False
            note.update(origin.note())
            try:
                self.base = read_disk(item.caption_path)
            except OSError as e:
                # Unreadable (permissions, I/O error): show why, and do not offer to overwrite it.
                self.base = None
                self.item = None
                area.load_text("")
                area.disabled = True
                self.query_one("#caption-title", Static).update(
                    f"{item.caption_path.name}: cannot read: {e.strerror or e}", layout=False)
                self._update_status()
                return
            self.stale = False
            area.load_text(self.base or "")
            area.disabled = False
            self.query_one("#caption-title", Static).update(item.caption_path.name, layout=False)
        self._update_status()

    def save(self) -> bool:
        """Write the caption if it changed. False when a conflict stopped it (the dialog is then open)."""
        if self.item is None or not self.dirty:
            return True
        if self.conflict_open:
            return False
        mine = normalise(self.text)
        try:
            theirs = read_disk(self.item.caption_path)
        except OSError as e:
            return self._failed(e)
        if theirs != self.base and theirs != mine:
            self._raise_conflict(mine, theirs)
            return False
        try:
            self._write(mine)
        except OSError as e:
            return self._failed(e)
        return True

    def _failed(self, error: OSError) -> bool:
        """A read or write failed: the edit stays in the editor, and the user is told why."""
        assert self.item is not None
        self._after_conflict.clear()
        self.app.notify(f"{self.item.caption_path.name} not saved: {error.strerror or error}; your edit is kept "
                        "in the editor", severity="error", timeout=8)
        return False

    def _write(self, text: str) -> None:
        assert self.item is not None
        write_caption(self.item.caption_path, text)
        self.base = text
        self.stale = False
        self._update_status()
        self.post_message(self.Saved(self.item, text))

    def disk_changed(self) -> None:
        """The current caption file changed on disk: reload it, or raise a conflict if there are edits."""
        if self.item is None or self.readonly:
            return
        try:
            theirs = read_disk(self.item.caption_path)
        except OSError:
            return  # unreadable for now; the next save reports it
        if theirs == self.base:
            return  # our own write, or a change that changes nothing
        mine = normalise(self.text)
        if not self.dirty or mine == theirs:
            self.base = theirs
            if mine != (theirs or ""):
                self._replace_text(theirs or "")
                self.app.notify(f"{self.item.caption_path.name} changed on disk; reloaded", timeout=3)
            self._update_status()
            return
        if not self.conflict_open:
            self._raise_conflict(mine, theirs)

    def _replace_text(self, text: str) -> None:
        """Replace the text as one undoable edit (so ctrl+z brings the previous text back)."""
        area = self.text_area
        area.replace(text, (0, 0), area.document.end)

    # --- conflicts ---------------------------------------------------------------------------
    def _raise_conflict(self, mine: str, theirs: str | None) -> None:
        from tui.screens.conflict import ConflictScreen

        assert self.item is not None
        self.conflict_open = True
        self._update_status()
        item = self.item
        self.post_message(self.ConflictRaised(item, mine, theirs))
        self.app.push_screen(ConflictScreen(item.caption_path, item.rel, mine, theirs, self.base),
                             lambda choice: self._resolve(item, choice))

    def _resolve(self, item: Item, choice: tuple[str, str] | None) -> None:
        """Apply the user's choice: ("mine" | "theirs" | "merged", text), or None to decide later."""
        self.conflict_open = False
        if self.item is None or item.path != self.item.path:
            return
        if choice is None:
            # Decide later: the edit stays in the editor, unsaved; the next save asks again.
            self.stale = True
            self._update_status()
            self._after_conflict.clear()
            return
        kind, text = choice
        self.stale = False
        if kind == "theirs":
            try:
                theirs = read_disk(item.caption_path)  # the newest, if it changed again meanwhile
            except OSError:
                theirs = choice[1] or None
            self.base = theirs
            self._replace_text(theirs or "")
            self._update_status()
        else:
            if kind == "merged":
                self._replace_text(text)
            try:
                self._write(normalise(text))
            except OSError as e:
                self._failed(e)
                self.stale = True
                self._update_status()
                return
        pending, self._after_conflict = self._after_conflict, []
        for then in pending:
            then()

    # --- exact token counts --------------------------------------------------------------------
    def _want_counter(self, project_dir: Path | None) -> None:
        """Look for the project's tokenizer in a worker: once per project, again later if there was none."""
        if project_dir is None:
            return
        now = time.monotonic()
        if project_dir == self._counter_project and (self.counter is not None or now - self._counter_asked
                                                     < TOKENIZER_RETRY_S):
            return
        if project_dir != self._counter_project:
            self.counter, self.counter_source, self._counts = None, "", {}
        self._counter_project, self._counter_asked = project_dir, now
        self._find_counter(project_dir)

    @work(thread=True, exclusive=True, group="caption-tokenizer", exit_on_error=False)
    def _find_counter(self, project_dir: Path) -> None:
        counter, source = project_token_counter(project_dir)
        self.post_message(self.TokenizerReady(project_dir, counter, source))

    @on(TokenizerReady)
    def _tokenizer_ready(self, event: TokenizerReady) -> None:
        event.stop()
        if event.project_dir != self._counter_project or event.counter is None:
            return
        self.counter, self.counter_source, self._counts = event.counter, event.source, {}
        self._update_status()

    def count_tokens(self, text: str) -> tuple[int, bool]:
        """(content tokens, exact): the tokenizer's count when loaded, else the estimate."""
        if self.counter is None:
            return estimate_tokens(text), False
        n = self._counts.get(text)
        if n is None:
            if len(self._counts) > 256:
                self._counts.clear()
            n = self._counts[text] = self.counter([text])[0]
        return n, True

    # --- status ------------------------------------------------------------------------------
    def _update_status(self) -> None:
        status = self.query_one("#caption-status", Static)
        status.set_class(False, "-over", "-conflict")
        if self.item is None:
            status.update("", layout=False)
            return
        text = normalise(self.text)
        if self.origin.trigger and not self.readonly and text:
            text = with_trigger(text, self.origin.trigger)  # what training reads
        n, exact = self.count_tokens(text)
        if self.readonly:
            state = "from project.toml"
        else:
            state = "unsaved" if self.dirty else ("saved" if self.base is not None else "no caption file")
        if self.conflict_open or self.stale:
            state = "changed on disk — choose a version"
            status.set_class(True, "-conflict")
        elif n > CLIP_CONTENT_TOKENS:
            status.set_class(True, "-over")
        # CLIP reads 77 tokens, two of them its start and end markers: 75 for the caption's words.
        over = " — over: CLIP cuts the rest" if n > CLIP_CONTENT_TOKENS else ""
        count = f"{n + 2}/{CLIP_WINDOW}" if exact else f"~{n + 2}/{CLIP_WINDOW}"
        status.update(f"{count} tokens{over} · {state}", layout=False)  # one line: no re-layout

    @on(TextArea.Changed, "#caption-text")
    def _changed(self, event: TextArea.Changed) -> None:
        event.stop()
        self._update_status()

    # --- actions -----------------------------------------------------------------------------
    def action_save(self) -> None:
        if self.item is None:
            return
        if self.readonly:
            self.app.notify(f"Nothing to save: concept {self.origin.concept!r} takes captions from project.toml "
                            f"(caption = {self.origin.kind!r}); see the note under the caption", severity="warning",
                            timeout=6)
            return
        was_dirty = self.dirty
        if self.save() and was_dirty:
            self.app.notify(f"saved {self.item.caption_path.name}", timeout=2)

    def action_next_image(self) -> None:
        self.post_message(self.Navigate(+1))

    def action_prev_image(self) -> None:
        self.post_message(self.Navigate(-1))

    def action_done(self) -> None:
        if self.save():
            self.post_message(self.Done())
        elif self.conflict_open:  # leave once the user has chosen
            self._after_conflict.append(lambda: self.post_message(self.Done()))

    def focus_text(self) -> None:
        if self.item is not None:
            # Focus now, not after a refresh: keys that arrived in the same read (`e` then `end` over a
            # slow link) must reach the editor, not the list.
            self.screen.set_focus(self.text_area)
