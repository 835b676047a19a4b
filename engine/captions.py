"""Sidecar captions: reading, writing, bulk operations as reviewable plans, and undo.

A caption lives next to its image with the same stem and `.txt` (kohya/EveryDream/OneTrainer).
Reading is forgiving and says what it forgave (`CaptionText.flags`): a BOM is stripped, CRLF
normalised, several lines joined with a space. A file that is not UTF-8 is read as what such files
are in practice, never with replacement characters (which would turn `café` into `caf�` in training
and, once written back, on disk): UTF-16 when it starts with a UTF-16 BOM (Windows Notepad's
"Unicode"), else Windows-1252 (Latin-1 and its Windows superset); the flag says which. Anything
written is UTF-8, so a bulk operation or a save in the editor converts such a file (the plan says so;
undo restores the original bytes).

Bulk edits are two steps, so the CLI's `--dry-run` and the TUI's preview show exactly what will be
written: a `plan_*` function returns a `Plan` (one `Change` per file that would change, nothing
written), and `apply_plan` writes it. Before writing, `apply_plan` saves an undo journal under the
project's `.cache/caption-undo/` with each file's old text and the hashes of old and new content;
`undo_last` restores the newest journal exactly, or refuses (touching nothing) when any of its files
was changed since. A file that had no caption and got one is removed again on undo.
"""
from __future__ import annotations

import base64
import difflib
import hashlib
import json
import os
import re
import string
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Literal, Sequence

from engine import atomic

CAPTION_EXT = ".txt"
UNDO_DIR = Path(".cache") / "caption-undo"
Mode = Literal["missing", "overwrite"]


class CaptionError(Exception):
    """A bulk caption operation that cannot be planned or applied; the message says why and where."""


class UndoConflict(CaptionError):
    """Undo refused because files changed after the operation; `files` lists them."""

    def __init__(self, message: str, files: list[Path]):
        super().__init__(message)
        self.files = files


# ---------------------------------------------------------------------------------------------
# Single captions


@dataclass(frozen=True)
class CaptionText:
    text: str
    flags: tuple[str, ...] = ()


def sidecar_path(image: str | os.PathLike) -> Path:
    """`a/photo.png` → `a/photo.txt`."""
    return Path(image).with_suffix(CAPTION_EXT)


FLAG_NOT_UTF8 = "caption not UTF-8"  # flags are "caption not UTF-8 (read as <encoding>; …)"


def decode_text(raw: bytes) -> tuple[str, str | None]:
    """(the text of a caption file as stored, BOM removed; the encoding it was read as when not UTF-8)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16"), "UTF-16"
        except UnicodeDecodeError:
            pass
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252"), "Windows-1252"
    except UnicodeDecodeError:  # the five bytes cp1252 leaves undefined: Latin-1 reads every byte
        return raw.decode("latin-1"), "Latin-1"


def decode_caption(raw: bytes) -> CaptionText:
    flags: list[str] = []
    text, encoding = decode_text(raw)
    if encoding:
        flags.append(f"{FLAG_NOT_UTF8} (read as {encoding}; a save writes UTF-8)")
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = [ln.strip() for ln in text.split("\n")]
    lines = [ln for ln in lines if ln]
    if len(lines) > 1:
        flags.append("caption has several lines (joined)")
    return CaptionText(" ".join(lines), tuple(flags))


def read_caption(path: str | os.PathLike) -> CaptionText:
    """Read a caption file (raises FileNotFoundError if there is none)."""
    return decode_caption(Path(path).read_bytes())


def read_sidecar(image: str | os.PathLike) -> CaptionText | None:
    """The caption of an image, or None when it has no sidecar file."""
    try:
        return read_caption(sidecar_path(image))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None


def write_caption(path: str | os.PathLike, text: str) -> None:
    """Write a caption file atomically (UTF-8, no BOM, exactly `text`)."""
    atomic.write_text(path, text)


# One match per estimated token: letters in chunks of up to 7, digits in chunks of up to 3, each punctuation mark.
_TOKEN = re.compile(r"[^\W\d_]{1,7}|\d{1,3}|[^\w\s]|_")


def estimate_tokens(text: str) -> int:
    """Tokenizer-free estimate of CLIP's content tokens (without start/end tokens).

    Common words are one BPE token; long or rare words split into several, so a word counts one token
    per started 7 letters. Each punctuation mark is a token; digit runs count one per 3 digits.
    Errs on the high side, which is the right side for a "caption too long" warning.
    """
    return len(_TOKEN.findall(text))


def tidy(text: str) -> str:
    """Collapse whitespace and the empty slots a template leaves (`a, , b` → `a, b`; no trailing `,`)."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\s*,(\s*,)+", ",", text)
    text = re.sub(r"\s+,", ",", text)
    return text.strip(" ,")


# ---------------------------------------------------------------------------------------------
# Templates


def template_fields(template: str) -> list[str]:
    """Field names of a `{name}, {type1}` template. Raises CaptionError for a malformed template."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise CaptionError(f"template {template!r}: {e}") from None
    names = []
    for _, name, _, _ in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise CaptionError(f"template {template!r}: every {{}} needs a field name, e.g. {{name}}")
        if "." in name or "[" in name:
            raise CaptionError(f"template {template!r}: field {{{name}}}: only plain column names are allowed")
        if name not in names:
            names.append(name)
    return names


def render_template(template: str, fields: dict[str, str]) -> str:
    """Fill a template from one image's metadata (KeyError names a missing field)."""
    names = template_fields(template)
    for n in names:
        if n not in fields:
            raise KeyError(n)
    return tidy(template.format_map({n: fields[n] for n in names}))


def with_trigger(caption: str, trigger: str, sep: str = ", ") -> str:
    """Prefix a trigger word unless the caption already starts with it."""
    trigger = trigger.strip()
    if not trigger:
        return caption
    marks = {trigger + sep, trigger + " ", trigger + ","} | ({trigger + sep.rstrip()} if sep.strip() else set())
    if caption == trigger or any(caption.startswith(m) for m in marks):
        return caption
    return f"{trigger}{sep}{caption}" if caption else trigger


# ---------------------------------------------------------------------------------------------
# Plans


@dataclass(frozen=True)
class Change:
    path: Path            # the caption file
    old: str | None       # None: no caption file before
    new: str | None       # None: the file is removed (only undo does that)
    rel: str = ""         # shown in diffs

    @property
    def label(self) -> str:
        return self.rel or str(self.path)


@dataclass
class Plan:
    operation: str
    changes: list[Change] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (rel path, reason)
    root: Path | None = None  # the project, where the undo journal goes
    reencoded: list[str] = field(default_factory=list)  # changed files that were not UTF-8 (written as UTF-8)

    def __len__(self) -> int:
        return len(self.changes)

    def diff(self) -> str:
        """A per-file unified diff of every change (the `--dry-run` output)."""
        out: list[str] = []
        for c in self.changes:
            old = [] if c.old is None else (c.old.splitlines() or [""])
            new = [] if c.new is None else (c.new.splitlines() or [""])
            a = f"a/{c.label}" if c.old is not None else "/dev/null"
            b = f"b/{c.label}" if c.new is not None else "/dev/null"
            out.extend(difflib.unified_diff(old, new, a, b, lineterm="", n=0))
        return "\n".join(out) + ("\n" if out else "")

    def summary(self, applied: bool = False) -> str:
        """One line: how many captions the plan changes (`applied`: changed) and how many it skipped."""
        created = sum(1 for c in self.changes if c.old is None)
        verb = "changed" if applied else "to change"
        s = f"{self.operation}: {len(self.changes)} caption(s) {verb} ({created} new)"
        if self.skipped:
            reasons: dict[str, int] = {}
            for _, r in self.skipped:
                reasons[r] = reasons.get(r, 0) + 1
            s += "; skipped " + ", ".join(f"{n} ({r})" for r, n in sorted(reasons.items()))
        if self.reencoded:
            s += (f"; {len(self.reencoded)} of them not UTF-8 ({_some(self.reencoded, 3)}): "
                  f"{'written' if applied else 'will be written'} as UTF-8, the same text")
        return s


@dataclass(frozen=True)
class Target:
    """An image whose caption a bulk operation may change."""

    image: Path
    rel: str = ""

    @property
    def caption_path(self) -> Path:
        return sidecar_path(self.image)


def targets(images: Iterable[str | os.PathLike], root: str | os.PathLike | None = None) -> list[Target]:
    out = []
    for im in images:
        im = Path(im)
        rel = im.name
        if root is not None:
            try:
                rel = im.relative_to(root).as_posix()
            except ValueError:
                rel = str(im)
        out.append(Target(im, rel))
    return out


def _current(t: Target) -> str | None:
    c = read_sidecar(t.image)
    return None if c is None else c.text


def _rel_caption(t: Target) -> str:
    return str(Path(t.rel).with_suffix(CAPTION_EXT).as_posix()) if t.rel else t.caption_path.name


def _exact_old(t: Target) -> tuple[str | None, str | None]:
    """(the file's text as stored, for the diff, or None when absent; its encoding when not UTF-8)."""
    try:
        raw = t.caption_path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None, None
    return decode_text(raw)


def _plan(operation: str, items: Sequence[Target], compute: Callable[[Target, str | None], str | None | tuple[None, str]],
          root: str | os.PathLike | None) -> Plan:
    plan = Plan(operation, root=Path(root) if root is not None else None)
    for t in items:
        cur = _current(t)
        result = compute(t, cur)
        if isinstance(result, tuple):
            plan.skipped.append((t.rel, result[1]))
            continue
        if result is None:
            continue
        if cur == result:  # the same caption once read (BOM, CRLF, trailing newline aside): leave the file be
            continue
        old, encoding = _exact_old(t)
        plan.changes.append(Change(t.caption_path, old, result, _rel_caption(t)))
        if encoding:
            plan.reencoded.append(_rel_caption(t))
    return plan


def as_typed(text: str) -> str:
    r"""`text` in backticks, as the user typed it: a repr doubles every backslash of a regex (`\bplushie\b`
    shown as '\\bplushie\\b'). Double backticks when the text holds one."""
    return f"``{text}``" if "`" in text else f"`{text}`"


def _gate(mode: Mode, cur: str | None) -> tuple[None, str] | None:
    if mode == "missing" and cur is not None:
        return (None, "already captioned; --overwrite replaces")
    return None


def plan_fixed(items: Sequence[Target], text: str, mode: Mode = "missing", root=None) -> Plan:
    """Every caption becomes `text`."""
    text = text.strip()
    return _plan(f"fixed {as_typed(text)}", items, lambda t, cur: _gate(mode, cur) or text, root)


def plan_empty(items: Sequence[Target], mode: Mode = "missing", root=None) -> Plan:
    """Every caption becomes an empty file (train on the image alone)."""
    return _plan("empty", items, lambda t, cur: _gate(mode, cur) or "", root)


def plan_template(items: Sequence[Target], template: str, lookup: Callable[[Target], dict[str, str] | None],
                  mode: Mode = "missing", root=None, *, skip_missing: bool = False,
                  source: str = "the metadata") -> Plan:
    """Captions from metadata fields (`lookup` gives an image's row, None when it has none).

    Raises CaptionError naming each missing field and the images lacking it (and the images with no
    row in `source`), unless `skip_missing`: those images are then skipped and listed in the plan.
    """
    names = template_fields(template)
    if not names:
        raise CaptionError(f"template {template!r} has no {{field}}; use `fixed` for one caption for all")
    missing: dict[str, list[str]] = {}
    no_row: list[str] = []
    rows: dict[Path, dict[str, str] | None] = {}
    for t in items:
        row = lookup(t)
        rows[t.image] = row
        if row is None:
            no_row.append(t.rel or str(t.image))
            continue
        for n in names:
            if n not in row:
                missing.setdefault(n, []).append(t.rel or str(t.image))
    if (missing or no_row) and not skip_missing:
        lines = [f"no row in {source} for {len(no_row)} image(s): {_some(no_row)}"] if no_row else []
        lines += [f"field {{{n}}} is missing for {len(ims)} image(s): {_some(ims)}" for n, ims in missing.items()]
        raise CaptionError(f"template {template!r}:\n  " + "\n  ".join(lines)
                           + "\n  (--skip-missing captions the other images and leaves these as they are)")

    def compute(t: Target, cur: str | None):
        row = rows[t.image]
        if row is None:
            return (None, f"no row in {source}")
        absent = [n for n in names if n not in row]
        if absent:
            return (None, f"no field {{{absent[0]}}}")
        return _gate(mode, cur) or render_template(template, row)
    return _plan(f"template {as_typed(template)}", items, compute, root)


def _some(names: list[str], n: int = 10) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def plan_prefix(items: Sequence[Target], prefix: str, sep: str = ", ", root=None) -> Plan:
    """Put `prefix` (a trigger word) in front of every existing caption; captions that start with it are left."""
    prefix = prefix.strip()
    if not prefix:
        raise CaptionError("prefix is empty")

    def compute(t: Target, cur: str | None):
        if cur is None:
            return (None, "no caption")
        return with_trigger(cur, prefix, sep)
    return _plan(f"prefix {as_typed(prefix)}", items, compute, root)


def plan_suffix(items: Sequence[Target], suffix: str, sep: str = ", ", root=None) -> Plan:
    """Append `suffix` to every existing caption that does not already end with it."""
    suffix = suffix.strip()
    if not suffix:
        raise CaptionError("suffix is empty")

    def compute(t: Target, cur: str | None):
        if cur is None:
            return (None, "no caption")
        if cur == suffix or any(cur.endswith(m + suffix) for m in (sep, " ", ",")):
            return cur
        return f"{cur}{sep}{suffix}" if cur else suffix
    return _plan(f"suffix {as_typed(suffix)}", items, compute, root)


def compile_pattern(pattern: str, *, literal: bool = False, ignore_case: bool = False) -> re.Pattern:
    """Compile a find pattern; a bad regex becomes a CaptionError with the pattern and the position."""
    flags = re.IGNORECASE if ignore_case else 0
    if literal:
        return re.compile(re.escape(pattern), flags)
    try:
        return re.compile(pattern, flags)
    except re.error as e:
        pos = e.pos if e.pos is not None else 0
        raise CaptionError(f"regex {as_typed(pattern)} does not compile: {e.msg} at position {pos}\n"
                           f"  {pattern}\n  {' ' * pos}^  (use --literal to match the text as is)") from None


def plan_replace(items: Sequence[Target], pattern: str, replacement: str, *, literal: bool = False,
                 ignore_case: bool = False, root=None) -> Plan:
    """Regex find/replace in every existing caption (`\\1` groups allowed in the replacement)."""
    rx = compile_pattern(pattern, literal=literal, ignore_case=ignore_case)
    if literal:
        replacement = replacement.replace("\\", "\\\\")
    def compute(t: Target, cur: str | None):
        if cur is None:
            return (None, "no caption")
        try:
            return tidy(rx.sub(replacement, cur)) if rx.search(cur) else cur
        except (re.error, IndexError) as e:
            raise CaptionError(f"replacement {as_typed(replacement)}: {e}") from None
    return _plan(f"replace {as_typed(pattern)} -> {as_typed(replacement)}", items, compute, root)


def plan_generated(items: Sequence[Target], generate: Callable[[list[Target]], list[str]], mode: Mode = "missing",
                   operation: str = "auto", root=None, batch_size: int = 8,
                   progress: Callable[[int, int], None] | None = None) -> Plan:
    """Captions from a generator (BLIP), called in batches only for the images that need one."""
    todo = [t for t in items if mode == "overwrite" or _current(t) is None]
    todo_set = set(todo)
    skipped = [(t.rel, "already captioned; --overwrite replaces") for t in items if t not in todo_set]
    made: dict[Path, str] = {}
    for i in range(0, len(todo), batch_size):
        batch = todo[i:i + batch_size]
        for t, text in zip(batch, generate(batch)):
            made[t.image] = tidy(text)
        if progress:
            progress(min(i + batch_size, len(todo)), len(todo))
    plan = _plan(operation, todo, lambda t, cur: made[t.image], root)
    plan.skipped = skipped + plan.skipped
    return plan


# ---------------------------------------------------------------------------------------------
# Applying and undoing


def _sha(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


def _read_bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None


def undo_dir(project_dir: str | os.PathLike) -> Path:
    return Path(project_dir) / UNDO_DIR


def apply_plan(plan: Plan, project_dir: str | os.PathLike | None = None, journal: bool = True) -> Path | None:
    """Write every change atomically; first save an undo journal (returns its path) in the project's .cache."""
    root = Path(project_dir) if project_dir is not None else plan.root
    if not plan.changes:
        return None
    entries = []
    for c in plan.changes:
        old = _read_bytes(c.path)
        new = None if c.new is None else c.new.encode("utf-8")
        where = c.path.resolve()
        if root is not None and where.is_relative_to(root.resolve()):
            where = where.relative_to(root.resolve())  # relative: the project may be moved before an undo
        entry: dict = {"path": where.as_posix(), "rel": c.label, "old_sha256": _sha(old), "new_sha256": _sha(new)}
        if old is not None:
            try:
                entry["old_text"] = old.decode("utf-8")
            except UnicodeDecodeError:
                entry["old_b64"] = base64.b64encode(old).decode("ascii")
        entries.append(entry)
    jpath = None
    if journal and root is not None:
        d = undo_dir(root)
        d.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
        jpath = d / f"{stamp}.json"
        atomic.write_json(jpath, {"version": 1, "operation": plan.operation, "created": time.time(),
                                  "files": entries})
    for c in plan.changes:
        if c.new is None:
            c.path.unlink(missing_ok=True)
        else:
            write_caption(c.path, c.new)
    return jpath


def journals(project_dir: str | os.PathLike) -> list[Path]:
    """Undo journals not yet undone, oldest first."""
    d = undo_dir(project_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.glob("*.json") if not p.name.endswith(".undone.json"))


@dataclass
class UndoResult:
    operation: str
    restored: list[str]
    journal: Path


def _undo_journal(project_dir: str | os.PathLike) -> tuple[Path, dict, list[dict]]:
    js = journals(project_dir)
    if not js:
        raise CaptionError(f"{project_dir}: nothing to undo (no journal in {UNDO_DIR})")
    jpath = js[-1]
    try:
        data = json.loads(jpath.read_text(encoding="utf-8"))
        files = data["files"]
    except (OSError, ValueError, KeyError) as e:
        raise CaptionError(f"{jpath}: unreadable undo journal: {e}") from None
    conflicts: list[Path] = []
    for e in files:
        p = Path(project_dir) / e["path"]
        now = _sha(_read_bytes(p))
        if now not in (e["new_sha256"], e["old_sha256"]):
            conflicts.append(p)
    if conflicts:
        shown = "\n  ".join(str(p) for p in conflicts)
        raise UndoConflict(f"cannot undo {data.get('operation', 'the last operation')}: {len(conflicts)} file(s) "
                           f"changed since; nothing was touched:\n  {shown}", conflicts)
    return jpath, data, files


def _journal_old(e: dict) -> bytes | None:
    if e["old_sha256"] is None:
        return None
    return e["old_text"].encode("utf-8") if "old_text" in e else base64.b64decode(e["old_b64"])


def undo_plan(project_dir: str | os.PathLike) -> Plan:
    """What `undo_last` would restore, as a Plan whose diff shows each file going back (nothing written).
    Raises UndoConflict like `undo_last`."""
    _, data, files = _undo_journal(project_dir)
    plan = Plan(f"undo {data.get('operation', '')}", root=Path(project_dir))
    for e in files:
        p = Path(project_dir) / e["path"]
        now, old = _read_bytes(p), _journal_old(e)
        if now != old:
            text = lambda b: None if b is None else decode_text(b)[0]  # noqa: E731
            plan.changes.append(Change(p, text(now), text(old), e.get("rel") or e["path"]))
    return plan


def undo_last(project_dir: str | os.PathLike, dry_run: bool = False) -> UndoResult:
    """Restore the files of the newest bulk operation exactly.

    Refuses, touching nothing, if any file now differs from what the operation wrote (a file still
    holding its old content is fine: the operation never got to it). The journal is then renamed
    `*.undone.json`, so a second undo goes one operation further back.
    """
    jpath, data, files = _undo_journal(project_dir)
    restored = [e.get("rel") or e["path"] for e in files]
    if not dry_run:
        for e in files:
            p = Path(project_dir) / e["path"]
            old = _journal_old(e)
            if old is None:
                p.unlink(missing_ok=True)
            elif _read_bytes(p) != old:
                atomic.write_bytes(p, old)
        os.replace(jpath, jpath.with_name(jpath.stem + ".undone.json"))
    return UndoResult(data.get("operation", ""), restored, jpath)
