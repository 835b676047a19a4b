"""The Dataset tab: the image list with filters, the preview, and the caption editor beside it.

The pane owns the scanned `Dataset` and decides what the list shows (text filter, flag filter). It
scans in a worker (`engine.project.scan_project`), so the tab paints at once; it rescans when images
appear or disappear on disk, and re-reads single captions when only they change. Bulk operations and
their undo run through `engine.captions`, exactly as `tunelab caption` does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Static, TextArea

from engine.captions import FLAG_NOT_UTF8, CaptionError, UndoConflict, estimate_tokens, undo_last, with_trigger
from engine.project import FLAG_NO_CAPTION, FLAG_TOO_LONG, IMAGE_EXTS, Dataset, Item, scan_project
from engine.schema import ConfigError
from tui import actions
from tui.screens.error import ReportsWorkerErrors
from tui.widgets.caption_editor import CaptionEditor, CaptionOrigin, origin_of, read_disk_caption
from tui.widgets.dataset_table import DatasetTable, short_flags
from tui.widgets.image_preview import ImagePreview

ANY_FLAG = "any flag"
CLIP_CONTENT_TOKENS = 75


@dataclass(frozen=True)
class ConfigFacts:
    """What the project's valid run configs decide about the flags (`tunelab check PROJECT CONFIG` decides
    the same for one config)."""

    resolution: int | None = None          # the smallest data.resolution: "too small" below it
    caption_flags_off: tuple[str, ...] = ()  # caption flags that matter to no config (prefixes)
    caption_note: str = ""                 # said in the editor of an image they would have flagged


def config_facts(project_dir: Path) -> ConfigFacts:
    """Read the configs in configs/ (the invalid ones are the Configs tab's business) and decide:

    - "too small" against the smallest `data.resolution`, so with several configs the flag is kept to
      images too small for every one;
    - "no caption" / "empty caption" (and "caption too long") only when some config trains on the
      captions as written. Textual inversion and pivotal tuning train an uncaptioned image on the
      placeholder, DreamBooth with an `instance_prompt` reads no caption (`engine.captionuse`, which
      `tunelab check` uses): when every config is such, the flag would only be noise. Without a config,
      captions are flagged (the default method, LoRA, trains on them).
    """
    from engine.captionuse import caption_use
    from engine.config import load_run_config
    from engine.placeholder import METHODS as PLACEHOLDER_METHODS

    cfgs = []
    for path in sorted((project_dir / "configs").glob("*.toml")):
        try:
            cfgs.append(load_run_config(path))
        except (ConfigError, OSError, ValueError):
            continue  # the Configs tab shows what is wrong with it
    if not cfgs:
        return ConfigFacts()
    resolution = min(c.data.resolution for c in cfgs)
    off = set.intersection(*(set(caption_use(c, [], {}).dropped_flags) for c in cfgs))  # flags no config needs
    if not off:
        return ConfigFacts(resolution)
    if all(c.method in PLACEHOLDER_METHODS for c in cfgs):
        tokens = sorted({c.textual_inversion.placeholder_token for c in cfgs})
        what = " / ".join(sorted({c.method.replace("_", " ") for c in cfgs}))
        on = repr(tokens[0]) if len(tokens) == 1 else "its placeholder"
        note = f"fine: {what} trains it on {on}"
    elif all(c.method == "dreambooth" for c in cfgs):
        note = "not needed: dreambooth.instance_prompt is every image's text"
    else:
        note = "not needed by any config in configs/"
    return ConfigFacts(resolution, tuple(sorted(off)), note)


def flag_heads(item: Item) -> list[str]:
    return [h for h in short_flags(item.flags).split(", ") if h]


class DatasetPane(ReportsWorkerErrors, Vertical):
    ACTION_SCOPE = "dataset"
    BINDINGS = actions.bindings("dataset")

    DEFAULT_CSS = """
    DatasetPane #dataset-bar { height: 1; }
    DatasetPane #dataset-filter { width: 1fr; height: 1; border: none; padding: 0 1; }
    DatasetPane #dataset-flag { width: auto; padding: 0 1; color: $accent; }
    DatasetPane #dataset-count { width: auto; padding: 0 1; color: $text-muted; }
    DatasetPane #dataset-body { height: 1fr; }
    DatasetPane #dataset-table { width: 3fr; }
    DatasetPane #dataset-side { width: 2fr; min-width: 30; border-left: vkey $panel-lighten-2; padding: 0 0 0 1; }
    DatasetPane #dataset-problems { height: auto; max-height: 3; color: $warning; }
    """

    class Scanned(Message):
        def __init__(self, dataset: Dataset | None, error: str = "", haystack: dict[Path, str] | None = None,
                     facts: ConfigFacts | None = None) -> None:
            super().__init__()
            self.dataset = dataset
            self.error = error
            self.haystack = haystack or {}  # built in the worker: 10,000 strings are not free
            self.facts = facts or ConfigFacts()

    class Undone(Message):
        def __init__(self, text: str, error: bool = False) -> None:
            super().__init__()
            self.text = text
            self.error = error

    def __init__(self, project_dir: str | os.PathLike, *, image_mode: str = "halfblock", animations: bool = True,
                 id: str | None = None) -> None:
        super().__init__(id=id)
        self.project_dir = Path(project_dir)
        self.image_mode = image_mode
        self.animations = animations
        self.dataset: Dataset | None = None
        self.items: list[Item] = []
        self.shown: list[Item] = []
        self.flag: str | None = None          # None: all; ANY_FLAG; or one flag's head
        self._haystack: dict[Path, str] = {}
        self._by_caption: dict[Path, Item] = {}
        self._origins: dict[str, CaptionOrigin] = {}  # concept label -> where its captions come from
        self.scanning = False
        self.facts = ConfigFacts()  # from the configs, at the last scan

    def compose(self) -> ComposeResult:
        with Horizontal(id="dataset-bar"):
            search = Input(placeholder="/ filter: file, concept or caption", id="dataset-filter")
            search.cursor_blink = self.animations
            yield search
            yield Static("flag: all", id="dataset-flag", markup=False)
            yield Static("scanning…", id="dataset-count", markup=False)
        yield Static("", id="dataset-problems", markup=False)
        with Horizontal(id="dataset-body"):
            yield DatasetTable(id="dataset-table", empty_text="scanning…")
            with Vertical(id="dataset-side"):
                yield ImagePreview(self.project_dir, self.image_mode, id="preview")
                yield CaptionEditor(cursor_blink=self.animations, id="caption-editor")

    def on_mount(self) -> None:
        self.query_one("#dataset-problems").display = False
        self.scanning = True
        # Scan after the first frame: the scanning thread would otherwise compete with it for the GIL.
        self.call_after_refresh(self.rescan)

    @property
    def table(self) -> DatasetTable:
        return self.query_one("#dataset-table", DatasetTable)

    @property
    def editor(self) -> CaptionEditor:
        return self.query_one("#caption-editor", CaptionEditor)

    # --- scanning ----------------------------------------------------------------------------
    def rescan(self) -> None:
        self.scanning = True
        self._scan_worker()

    @work(thread=True, exclusive=True, group="scan", exit_on_error=False)
    def _scan_worker(self) -> None:
        try:
            facts = config_facts(self.project_dir)
            dataset = scan_project(self.project_dir, resolution=facts.resolution)
            if facts.caption_flags_off:
                for it in dataset.items:
                    it.flags = [f for f in it.flags if not f.startswith(facts.caption_flags_off)]
            self.post_message(self.Scanned(dataset, haystack={it.path: self._hay(it) for it in dataset.items},
                                           facts=facts))
        except ConfigError as e:
            self.post_message(self.Scanned(None, f"project.toml has errors:\n{e}"))
        except OSError as e:
            self.post_message(self.Scanned(None, f"cannot scan {self.project_dir}: {e.strerror or e}"))

    @on(Scanned)
    def _scanned(self, event: Scanned) -> None:
        event.stop()
        self.scanning = False
        problems = self.query_one("#dataset-problems", Static)
        if event.dataset is None:
            self.dataset, self.items = None, []
            self.table.empty_text = "cannot scan this project: see above"
            problems.update(event.error)
            problems.display = True
            self._apply_filter()
            return
        ds = event.dataset
        self.dataset = ds
        self.facts = event.facts
        note = self.facts.caption_note
        self.editor.text_area.placeholder = (f"no caption — {note}; type one, ctrl+s saves" if note
                                             else "no caption: type one, ctrl+s saves")
        self.items = ds.items
        self._origins = {c.label: origin_of(c) for c in ds.project.concepts}
        self._haystack = event.haystack
        self._by_caption = {it.caption_path: it for it in self.items}
        shown = [str(p) for p in ds.problems]
        problems.update(("; ".join(shown[:3]) + (f" (+{len(shown) - 3} more)" if len(shown) > 3 else ""))
                        if shown else "")
        problems.display = bool(shown)
        self._apply_filter()
        self.editor.disk_changed()  # a bulk operation or an undo may have changed the caption being edited

    @staticmethod
    def _hay(item: Item) -> str:
        return f"{item.rel}\t{item.concept}\t{item.caption or ''}".lower()

    # --- filtering ---------------------------------------------------------------------------
    def _apply_filter(self) -> None:
        words = self.query_one("#dataset-filter", Input).value.lower().split()
        flag = self.flag
        out = []
        for it in self.items:
            if flag is not None:
                heads = flag_heads(it)
                if (flag == ANY_FLAG and not heads) or (flag != ANY_FLAG and flag not in heads):
                    continue
            if words:
                hay = self._haystack.get(it.path) or self._hay(it)
                if not all(w in hay for w in words):
                    continue
            out.append(it)
        self.shown = out
        total = len(self.items)
        if self.dataset is not None:
            if total and not out:
                how = " and ".join(x for x in (f"text {' '.join(words)!r}" if words else "",
                                               f"flag {flag!r}" if flag else "") if x)
                hint = ", ".join(x for x in ("/ changes the text" if words else "",
                                             "f cycles the flag" if flag else "") if x)
                self.table.empty_text = f"no image matches the {how} ({total:,} hidden): {hint}"
            else:
                self.table.empty_text = ("no images in this project yet: put images (with photo.txt captions) "
                                         "in a folder here")
        self.table.set_items(out)
        self.query_one("#dataset-count", Static).update(
            "scanning…" if self.scanning and not total else
            (f"{len(out):,} of {total:,}" if len(out) != total else f"{total:,} images"))
        self.query_one("#dataset-flag", Static).update(f"flag: {flag or 'all'}")

    @on(Input.Changed, "#dataset-filter")
    def _filter_changed(self) -> None:
        self._apply_filter()

    @on(Input.Submitted, "#dataset-filter")
    def _filter_done(self) -> None:
        self.table.focus()

    def flags_present(self) -> list[str]:
        seen: dict[str, None] = {}
        for it in self.items:
            for h in flag_heads(it):
                seen.setdefault(h, None)
        return sorted(seen)

    # --- selection, preview, editor ----------------------------------------------------------
    @on(DatasetTable.Highlighted)
    def _highlighted(self, event: DatasetTable.Highlighted) -> None:
        event.stop()
        item = event.item
        if item is None:
            typing = self.editor.text_area.has_focus
            self.query_one(ImagePreview).show(None, "")
            self.editor.load(None)  # disables the text area: focus on it would be lost, keys going nowhere
            if typing:
                self.screen.set_focus(self.table)
            return
        self._show_preview(item)
        self.editor.load(item, self._origins.get(item.concept, CaptionOrigin()))

    def _show_preview(self, item: Item) -> None:
        """The image and its facts line (again for the same image only updates the line)."""
        size = f"{item.width}x{item.height}" if item.width else "size unknown"
        facts = f"{item.rel} · {size} · {item.concept}"
        if item.flags:
            facts += " · " + "; ".join(item.flags)
        self.query_one(ImagePreview).show(item.path, facts)

    @on(DatasetTable.Selected)
    def _selected(self, event: DatasetTable.Selected) -> None:
        event.stop()
        self.editor.focus_text()

    @on(CaptionEditor.Saved)
    def _saved(self, event: CaptionEditor.Saved) -> None:
        event.stop()
        self._recaption(event.item, event.text)  # written as UTF-8: no "not UTF-8" flag any more

    def _recaption(self, item: Item, text: str | None, read_flags: tuple[str, ...] = ()) -> None:
        """Update an item after its sidecar changed (the list shows what training will read).
        `read_flags`: what reading the new file forgave (`decode_caption`), e.g. that it is not UTF-8."""
        origin = self._origins.get(item.concept, CaptionOrigin())
        if not origin.editable:
            return  # training reads no sidecar for this concept: the list keeps what it does read
        trigger = origin.trigger
        keep = [f for f in item.flags if f != FLAG_NO_CAPTION and f != "empty caption"
                and not f.startswith((FLAG_TOO_LONG, FLAG_NOT_UTF8))]
        keep += [f for f in read_flags if f.startswith(FLAG_NOT_UTF8)]
        if text is None:
            item.caption = None
            keep.append(FLAG_NO_CAPTION)
        else:
            caption = with_trigger(text, trigger) if trigger else text
            item.caption = caption
            if not text:
                keep.append("empty caption")
            n = estimate_tokens(caption)
            if caption and n > CLIP_CONTENT_TOKENS:
                keep.append(f"{FLAG_TOO_LONG} (~{n} tokens, CLIP reads {CLIP_CONTENT_TOKENS})")
        off = self.facts.caption_flags_off
        item.flags = [f for f in keep if not f.startswith(off)] if off else keep
        self._haystack[item.path] = self._hay(item)
        self.table.refresh_items()
        if self.table.current is item:
            self._show_preview(item)

    @on(CaptionEditor.Navigate)
    def _navigate(self, event: CaptionEditor.Navigate) -> None:
        event.stop()
        self.table.cursor += event.delta
        self.editor.focus_text()

    @on(CaptionEditor.Done)
    def _done(self, event: CaptionEditor.Done) -> None:
        event.stop()
        self.table.focus()

    # --- changes on disk ---------------------------------------------------------------------
    def files_changed(self, paths: set[Path]) -> None:
        """Paths changed outside the app (from the watcher): re-read captions, rescan for images."""
        rescan = False
        current = self.editor.path
        for p in paths:
            suffix = p.suffix.lower()
            if suffix in IMAGE_EXTS:
                rescan = True
            elif suffix == ".txt":
                item = self._by_caption.get(p)
                if item is not None:
                    try:
                        read = read_disk_caption(p)
                        self._recaption(item, read.text if read else None, read.flags if read else ())
                    except OSError:
                        pass  # unreadable right now; the editor reports it when it matters
                if current is not None and p == current:
                    self.editor.disk_changed()
            elif p.name in ("project.toml", "metadata.csv", "metadata.jsonl") or not suffix:
                rescan = True  # a folder (moved in or out), or what captions are made from
            elif suffix == ".toml" and p.parent.name == "configs":
                rescan = True  # a run config's resolution decides the "too small" flag
        if rescan:
            self.rescan()

    # --- actions -----------------------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "focus_list":  # only from the filter; elsewhere escape means "back to projects"
            return self.query_one("#dataset-filter", Input).has_focus
        if action in ("edit_caption", "focus_filter"):
            # Priority bindings, run by the app before it routes the next key: `e` then `end` arriving
            # in one read (a paste, a slow SSH link) moves the focus first, so `end` reaches the editor.
            # Not while typing (the screen's focus, so the command palette on top still offers them): in the
            # filter or the editor the key is text.
            return not isinstance(self.screen.focused, (Input, TextArea))
        return True

    def action_focus_list(self) -> None:
        self.table.focus()

    def action_focus_filter(self) -> None:
        self.screen.set_focus(self.query_one("#dataset-filter", Input))  # now: `.focus()` waits a turn

    def action_cycle_flag(self) -> None:
        cycle: list[str | None] = [None, ANY_FLAG, *self.flags_present()]
        try:
            i = cycle.index(self.flag)
        except ValueError:
            i = 0
        self.flag = cycle[(i + 1) % len(cycle)]
        self._apply_filter()

    def action_edit_caption(self) -> None:
        self.editor.focus_text()

    def action_rescan(self) -> None:
        self.rescan()

    def action_bulk(self) -> None:
        if self.dataset is None:
            self.app.bell()
            return
        if not self.editor.save():
            self.app.notify("Resolve the caption conflict first", severity="warning")
            return
        from tui.widgets.bulk_dialog import BulkDialog

        filtered = len(self.shown) != len(self.items)
        scope = " shown by the filter" if filtered else ""
        self.app.push_screen(BulkDialog(self.dataset, self.shown, scope), self._bulk_done)

    def _bulk_done(self, result) -> None:
        if result is None:
            return
        plan, _journal = result
        created = sum(1 for c in plan.changes if c.old is None)
        self.app.notify(f"{plan.operation}: wrote {len(plan.changes)} caption file(s)"
                        + (f" ({created} new)" if created else "") + " — u undoes it", timeout=6,
                        markup=False)  # a regex's [ck] is text, not a style
        self.rescan()

    def action_undo_bulk(self) -> None:
        if not self.editor.save():
            self.app.notify("Resolve the caption conflict first", severity="warning")
            return
        self._undo_worker()

    @work(thread=True, exclusive=True, group="undo", exit_on_error=False)
    def _undo_worker(self) -> None:
        try:
            res = undo_last(self.project_dir)
            self.post_message(self.Undone(f"undid {res.operation}: restored {len(res.restored)} caption file(s)"))
        except UndoConflict as e:
            self.post_message(self.Undone(str(e), error=True))
        except CaptionError as e:
            self.post_message(self.Undone(str(e), error=True))

    @on(Undone)
    def _undone(self, event: Undone) -> None:
        event.stop()
        if event.error:
            from tui.screens.error import ErrorScreen

            self.app.push_screen(ErrorScreen("Nothing was undone", event.text))
            return
        self.app.notify(event.text, timeout=5, markup=False)
        self.rescan()
