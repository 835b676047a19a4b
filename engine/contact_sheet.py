"""The contact sheet: a run's sample images as prompts × checkpoints, as a model and as a PNG.

Rows are the sample prompts grouped by goal kind (accuracy, flexibility, preservation, then other);
columns are the run's sample folders (`samples/e0005-s00001200/`), oldest first, epoch 0 ("base") first.
A pivotal run's columns carry the phase they were trained in (`TI` or `LoRA`, from its `phase` events:
a checkpoint after step N is LoRA when N is past the step the LoRA phase began at).
Each cell is one image for one seed: `samples/<column>/p<prompt>-s<seed>.png`.

Prompt text, kind, seeds, guidance and steps come from each folder's `samples.json`, which the trainer
writes next to the images. Readers tolerate a folder without one (still being written, or an older run):
its prompts are then known only by index, from the file names. Accepted `samples.json` shape (every key
optional):

    {"epoch": 5, "step": 1200, "seeds": [42], "guidance": 7.5, "steps": 25,
     "prompts": [{"text": "...", "kind": "accuracy", "seeds": [42], "guidance": 7.5, "steps": 25}, ...]}

(a prompt may also be a plain string), plus `width`, `height`, `scheduler`, and after a resume that added
prompts or seeds a `backfilled` list: `{"prompt": 0, "seed": 2, "steps": 30, "guidance": 7.5, "width": 64,
"height": 64, "scheduler": "dpm++", "negative_prompt": "", "t": ...}` per cell rendered later, with the
settings of that resume (`engine.train.sampling.merged_samples_json`). `Sheet.cell_render` says what one
cell was rendered with and, for such a later cell, which settings differ from the rest of its column;
the TUI marks those cells (`↻`), and so does the PNG (a corner mark and a legend line).

The PNG (`render_sheet`) uses PIL only, with PIL's default font, and is shared by `tunelab grid` and the
TUI's Compare tab (`e`), so both export the same picture.
"""
from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from engine.rundir import RunDir, parse_sample_name

KIND_ORDER = ("accuracy", "flexibility", "preservation", "other")
SAMPLES_JSON = "samples.json"


@dataclass
class SheetPrompt:
    index: int
    text: str
    kind: str = "other"
    seeds: list[int] = field(default_factory=list)
    guidance: float | None = None
    steps: int | None = None
    negative_prompt: str = ""


PHASE_TAGS = {"textual_inversion": "TI", "lora": "LoRA"}  # pivotal tuning's phases, as column headers say them
PHASE_LEGEND = "TI: textual-inversion phase, LoRA: LoRA phase"


@dataclass(frozen=True)
class SheetColumn:
    name: str
    epoch: int
    step: int
    phase: str = ""  # pivotal tuning: the phase this checkpoint's last step trained in ("" for other runs, base)

    @property
    def label(self) -> str:
        return column_label(self.epoch, self.step) + (f" · {self.phase_tag}" if self.phase_tag else "")

    @property
    def phase_tag(self) -> str:
        return PHASE_TAGS.get(self.phase, self.phase)


def plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def column_label(epoch: int, step: int) -> str:
    return "base" if epoch == 0 else f"epoch {epoch} · step {step}"


SETTINGS = ("steps", "guidance", "width", "height", "scheduler", "negative_prompt")  # what a sample was rendered with


@dataclass(frozen=True)
class CellRender:
    """What one cell was rendered with (`settings`, keyed by SETTINGS; None where samples.json does not
    say), and for a cell a resume rendered later (`later`), when (`t`) and which settings differ from
    the rest of its column (`differs`: name -> (the column's value, this cell's value))."""

    settings: dict[str, Any]
    later: bool = False
    t: float | None = None
    differs: dict[str, tuple[Any, Any]] = field(default_factory=dict)


def fmt_setting(name: str, value: Any) -> str:
    if value is None:
        return "-"
    if name == "negative_prompt":
        return repr(value) if value else "none"
    return str(value)


def differs_text(differs: dict[str, tuple[Any, Any]], short: bool = False) -> str:
    """`steps 30 (column: 20), 96×96 (column: 64×64)`; `short`: the cell's values only (`steps 30 96×96`)."""
    parts: list[tuple[str, str]] = []  # (this cell's, the column's)
    for name in SETTINGS:
        if name in ("width", "height"):
            if name == "width" and ("width" in differs or "height" in differs):
                w = differs.get("width")
                h = differs.get("height")
                parts.append((f"{w[1] if w else '='}×{h[1] if h else '='}",
                              f"{w[0] if w else '='}×{h[0] if h else '='}"))
            continue
        if name in differs:
            old, new = differs[name]
            label = "negative" if name == "negative_prompt" else name
            parts.append((f"{label} {fmt_setting(name, new)}", fmt_setting(name, old)))
    if short:
        return " ".join(new for new, _ in parts)
    return ", ".join(f"{new} (column: {old})" for new, old in parts)


@dataclass
class Sheet:
    """What a contact sheet shows for one seed. `rows` are prompts in display order (grouped by kind)."""

    run_dir: RunDir
    rows: list[SheetPrompt]
    columns: list[SheetColumn]
    seeds: list[int]
    seed: int | None
    files: dict[str, set[str]] = field(default_factory=dict)  # column name -> png names present
    info: dict[str, dict[str, Any]] = field(default_factory=dict)  # column name -> its samples.json
    _later_index: dict[str, dict[tuple[Any, Any], dict[str, Any]]] = field(default_factory=dict, repr=False)
    _later: dict[tuple[int, int], CellRender] | None = field(default=None, repr=False)

    def cell_path(self, row: int, col: int, seed: int | None = None) -> Path | None:
        """The image of a cell, or None where it is missing (not sampled yet, or failed)."""
        seed = self.seed if seed is None else seed
        if seed is None or not (0 <= row < len(self.rows) and 0 <= col < len(self.columns)):
            return None
        column = self.columns[col]
        name = f"p{self.rows[row].index:02d}-s{seed:04d}.png"
        if name not in self.files.get(column.name, ()):
            return None
        return self.run_dir.samples_dir / column.name / name

    def groups(self) -> list[tuple[str, list[int]]]:
        """(kind, row indices) in display order; kinds with no prompts are left out."""
        out: list[tuple[str, list[int]]] = []
        for i, p in enumerate(self.rows):
            if out and out[-1][0] == p.kind:
                out[-1][1].append(i)
            else:
                out.append((p.kind, [i]))
        return out

    def shape(self) -> str:
        """`1 prompt × 2 columns (base + 1 checkpoint)`: the base column (epoch 0) is no checkpoint."""
        base = sum(1 for c in self.columns if c.epoch == 0)  # the columns `column_label` calls "base"
        prompts, saved = plural(len(self.rows), "prompt"), plural(len(self.columns) - base, "checkpoint")
        if not base:  # sample.at_start = false
            return f"{prompts} × {saved}"
        return f"{prompts} × {plural(len(self.columns), 'column')} ({'base' if base == 1 else f'{base} base'} + {saved})"

    def filled(self) -> int:
        return sum(1 for r in range(len(self.rows)) for c in range(len(self.columns)) if self.cell_path(r, c))

    def column_info(self, col: int) -> dict[str, Any]:
        """The column's `samples.json` (empty when missing), as `load_sheet` read it."""
        name = self.columns[col].name
        if name not in self.info:
            self.info[name] = read_samples_json(self.run_dir.samples_dir / name)
        return self.info[name]

    def cell_render(self, row: int, col: int, seed: int | None = None) -> CellRender:
        """What the cell was rendered with, from its column's samples.json: a `backfilled` entry for a
        cell a resume added later, else the prompt's record and the column's size and scheduler."""
        seed = self.seed if seed is None else seed
        info = self.column_info(col)
        index = self.rows[row].index
        entry = self._backfilled(col).get((index, seed))
        if entry is None:
            return CellRender(_record_settings(info, _prompt_record(info, index)))
        settings = {k: entry.get(k) for k in SETTINGS}
        column = _record_settings(info, _first_hand_record(info, index))
        differs = {k: (column[k], settings[k]) for k in SETTINGS
                   if settings[k] is not None and column[k] is not None and settings[k] != column[k]}
        t = entry.get("t")
        return CellRender(settings, True, float(t) if isinstance(t, (int, float)) else None, differs)

    def _backfilled(self, col: int) -> dict[tuple[Any, Any], dict[str, Any]]:
        """The column's `backfilled` entries by (prompt index, seed), the last one for a cell winning."""
        name = self.columns[col].name
        index = self._later_index.get(name)
        if index is None:
            entries = self.column_info(col).get("backfilled")
            index = self._later_index[name] = {(b.get("prompt"), b.get("seed")): b for b in
                                               (entries if isinstance(entries, list) else []) if isinstance(b, dict)}
        return index

    def later_cells(self) -> dict[tuple[int, int], CellRender]:
        """Every present cell of this seed that a resume rendered later, by (row, col). Cached: the
        sheet is read-only once loaded (`load_sheet` makes a new one for each change)."""
        if self._later is None:
            out = {}
            for c in range(len(self.columns)):
                if self._backfilled(c):
                    for r in range(len(self.rows)):
                        if (self.rows[r].index, self.seed) in self._backfilled(c) and self.cell_path(r, c):
                            out[(r, c)] = self.cell_render(r, c)
            self._later = out
        return self._later


def _prompt_record(info: dict[str, Any], index: int) -> dict[str, Any]:
    for n, r in enumerate(info.get("prompts") or []):
        if isinstance(r, dict) and r.get("index", n) == index:
            return r
    return {}


def _first_hand_record(info: dict[str, Any], index: int) -> dict[str, Any]:
    """The settings the column was first rendered with: this prompt's record if some of its cells were
    rendered with the column, else the first prompt that was (a prompt a resume added has a record
    with the resume's settings only)."""
    later = {(b.get("prompt"), b.get("seed")) for b in info.get("backfilled") or [] if isinstance(b, dict)}

    def first_hand(n: int, r: Any) -> bool:
        return isinstance(r, dict) and any((r.get("index", n), s) not in later for s in r.get("seeds") or [])

    records = list(enumerate(info.get("prompts") or []))
    for n, r in records:
        if first_hand(n, r) and r.get("index", n) == index:
            return r
    for n, r in records:
        if first_hand(n, r):
            return r
    return {}


def _record_settings(info: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    def pick(key: str) -> Any:
        value = record.get(key)
        return value if value is not None else info.get(key)

    return {"steps": pick("steps"), "guidance": pick("guidance"), "width": info.get("width"),
            "height": info.get("height"), "scheduler": info.get("scheduler"),
            "negative_prompt": pick("negative_prompt")}


def read_samples_json(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / SAMPLES_JSON).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _kind(value: Any) -> str:
    return value if value in KIND_ORDER else "other"


def _prompts_from_json(data: dict[str, Any]) -> list[SheetPrompt]:
    out = []
    seeds = [s for s in data.get("seeds", []) if isinstance(s, int)]
    for i, p in enumerate(data.get("prompts") or []):
        if isinstance(p, str):
            p = {"text": p}
        if not isinstance(p, dict):
            continue
        index = p.get("index", i)
        out.append(SheetPrompt(
            index=index if isinstance(index, int) else i,
            text=str(p.get("text", "")),
            kind=_kind(p.get("kind")),
            seeds=[s for s in (p.get("seeds") or seeds) if isinstance(s, int)],
            guidance=p.get("guidance") or data.get("guidance"),
            steps=p.get("steps") or data.get("steps"),
            negative_prompt=str(p.get("negative_prompt") or data.get("negative_prompt") or ""),
        ))
    return out


class _PhaseFollower:
    """Where a pivotal run switched from textual inversion to LoRA, from its `phase` events, read
    incrementally (by byte offset), so a sheet reloaded every second reads only what was appended."""

    def __init__(self, path: Path):
        from engine.rundir import EventTail

        self.tail = EventTail(path)
        self.seen = False           # any phase event at all (a pivotal run)
        self.switch: int | None = None  # steps trained as textual inversion, once the LoRA phase began

    def update(self) -> None:
        for ev in self.tail.read_new():
            if ev.get("kind") != "phase":
                continue
            self.seen = True
            if ev.get("phase") == "lora" and isinstance(ev.get("step"), int):
                self.switch = ev["step"]

    def phase_at(self, step: int) -> str:
        """The phase of a checkpoint saved after `step` steps: steps 1…switch were textual inversion."""
        if not self.seen or step <= 0:
            return ""
        return "lora" if self.switch is not None and step > self.switch else "textual_inversion"


_PHASES: dict[Path, _PhaseFollower] = {}
_PHASES_LOCK = threading.Lock()


def column_phases(run_dir: RunDir) -> _PhaseFollower:
    with _PHASES_LOCK:
        follower = _PHASES.get(run_dir.events_path)
        if follower is None:
            follower = _PHASES[run_dir.events_path] = _PhaseFollower(run_dir.events_path)
        follower.update()
        return follower


def load_sheet(run_dir: RunDir | str | os.PathLike, seed: int | None = None) -> Sheet:
    """Scan a run's sample folders. Cheap: one listdir per folder and one small JSON read per folder
    (and what was appended to events.jsonl since the last call, for pivotal runs' phases)."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    phases = column_phases(run_dir)
    columns = [SheetColumn(name, epoch, step, phases.phase_at(step)) for name, epoch, step in run_dir.sample_columns()]
    prompts: dict[int, SheetPrompt] = {}
    seeds: set[int] = set()
    files: dict[str, set[str]] = {}
    info: dict[str, dict[str, Any]] = {}
    for col in columns:
        folder = run_dir.samples_dir / col.name
        info[col.name] = read_samples_json(folder)
        for p in _prompts_from_json(info[col.name]):
            prompts.setdefault(p.index, p)
            seeds.update(p.seeds)
        try:
            names = {e.name for e in os.scandir(folder) if e.name.endswith(".png")}
        except OSError:
            names = set()
        present = set()
        for name in names:
            parsed = parse_sample_name(name)
            if parsed:
                present.add(name)
                idx, s = parsed
                seeds.add(s)
                prompts.setdefault(idx, SheetPrompt(index=idx, text=f"prompt {idx}"))
        files[col.name] = present
    order = {k: i for i, k in enumerate(KIND_ORDER)}
    rows = sorted(prompts.values(), key=lambda p: (order[_kind(p.kind)], p.index))
    seed_list = sorted(seeds)
    if seed is None or seed not in seeds:
        seed = seed_list[0] if seed_list else seed
    return Sheet(run_dir, rows, columns, seed_list, seed, files, info)


# --- the PNG ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class SheetLayout:
    """Pixel geometry of a rendered sheet; `size` is exact, so callers and tests can predict it."""

    cell: int = 128
    gap: int = 6
    label_width: int = 260
    header_height: int = 28
    group_height: int = 26
    title_height: int = 30
    note_height: int = 20  # the legend line under the sheet, when it has cells rendered later

    def size(self, n_rows: int, n_cols: int, n_groups: int, notes: int = 0) -> tuple[int, int]:
        width = self.label_width + n_cols * (self.cell + self.gap) + self.gap
        height = (self.title_height + self.header_height + n_groups * self.group_height
                  + n_rows * (self.cell + self.gap) + self.gap + notes * self.note_height)
        return width, height


BACKGROUND = (24, 24, 28)
FOREGROUND = (230, 230, 230)
MUTED = (150, 150, 160)
ACCENT = (240, 190, 80)
EMPTY = (60, 60, 68)
LATER = (90, 170, 240)  # the corner mark of a cell a resume rendered later


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int, max_lines: int) -> list[str]:
    words, lines, line = text.split(), [], ""
    for word in words:
        trial = f"{line} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not line:
            line = trial
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        last = lines[-1]
        while last and draw.textlength(last + "…", font=font) > width:
            last = last[:-1]
        lines[-1] = last + "…"
    return lines


def render_sheet(sheet: Sheet, layout: SheetLayout = SheetLayout(), best: str | None = None) -> Image.Image:
    """Draw the sheet: a title, column headers, kind headers, wrapped prompt labels, the images (fitted
    into square cells) and an empty box for every missing cell. `best` outlines that column. Cells a
    resume rendered later get a corner mark, explained by a legend line under the sheet."""
    groups = sheet.groups()
    later = sheet.later_cells()
    width, height = layout.size(len(sheet.rows), len(sheet.columns), len(groups), 1 if later else 0)
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    font, small, bold = _font(14), _font(12), _font(16)
    cell, gap = layout.cell, layout.gap
    title = f"{sheet.run_dir.run_id}  ·  seed {sheet.seed if sheet.seed is not None else '-'}"
    if any(col.phase for col in sheet.columns):
        title += f"  ·  {PHASE_LEGEND}"
    draw.text((gap, 6), _clip(draw, title, bold, width - 2 * gap), fill=FOREGROUND, font=bold)

    def col_x(c: int) -> int:
        return layout.label_width + gap + c * (cell + gap)

    top = layout.title_height
    for c, col in enumerate(sheet.columns):
        first, second = column_header(col.epoch, col.step, col.phase_tag)
        first += "  · best" if best == col.name else ""  # PIL's default font has no ★ (drawn as a box)
        for i, line in enumerate((first, second)):
            draw.text((col_x(c), top + 1 + 13 * i), _clip(draw, line, small, cell + gap - 2),
                      fill=ACCENT if best == col.name else FOREGROUND, font=small)
    y = top + layout.header_height
    for kind, rows in groups:
        draw.text((gap, y + 5), kind, fill=ACCENT, font=font)
        draw.line((gap, y + layout.group_height - 3, width - gap, y + layout.group_height - 3), fill=EMPTY)
        y += layout.group_height
        for r in rows:
            prompt = sheet.rows[r]
            for i, line in enumerate(_wrap(draw, prompt.text, small, layout.label_width - 2 * gap,
                                           max(1, cell // 16))):
                draw.text((gap, y + gap + i * 16), line, fill=MUTED, font=small)
            for c in range(len(sheet.columns)):
                x0, y0 = col_x(c), y + gap
                path = sheet.cell_path(r, c)
                pasted = False
                if path is not None:
                    try:
                        with Image.open(path) as src:
                            thumb = fit_cell(src.convert("RGB"), cell)
                        img.paste(thumb, (x0 + (cell - thumb.width) // 2, y0 + (cell - thumb.height) // 2))
                        pasted = True
                    except (OSError, ValueError):
                        pasted = False
                if not pasted:
                    draw.rectangle((x0, y0, x0 + cell - 1, y0 + cell - 1), outline=EMPTY)
                if best == sheet.columns[c].name:
                    draw.rectangle((x0 - 2, y0 - 2, x0 + cell + 1, y0 + cell + 1), outline=ACCENT)
                if (r, c) in later:
                    k = max(6, cell // 6)
                    draw.polygon([(x0 + cell - k, y0), (x0 + cell - 1, y0), (x0 + cell - 1, y0 + k - 1)],
                                 fill=LATER)
            y += cell + gap
    if later:
        draw.polygon([(gap + 9, y + 3), (gap + 18, y + 3), (gap + 18, y + 12)], fill=LATER)
        draw.text((gap + 24, y + 2), _clip(draw, later_legend(later), small, width - 2 * gap - 24),
                  fill=FOREGROUND, font=small)
    return img


def later_legend(later: dict[tuple[int, int], CellRender]) -> str:
    """The sheet's note on its cells rendered later: how many, and the settings they differ in."""
    kinds = sorted({differs_text(r.differs) for r in later.values() if r.differs})
    text = f"{len(later)} cell(s) rendered later, on resume (new prompts or seeds)"
    if kinds:
        text += ", with other settings than their column: " + "; ".join(kinds)
    else:
        text += ", with their column's settings"
    return text


def column_header(epoch: int, step: int, phase: str = "") -> tuple[str, str]:
    """The PNG's column heading, two lines so it fits a cell: `epoch 5` / `step 1200` (`epoch 0` / `base`);
    a pivotal run's phase after the step (`step 1200 · LoRA`)."""
    return f"epoch {epoch}", "base" if epoch == 0 else f"step {step}" + (f" · {phase}" if phase else "")


def _clip(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def fit_cell(image: Image.Image, cell: int) -> Image.Image:
    """Scale an image to fill a `cell`-pixel square (aspect kept): small samples (a 64 px demo) are
    enlarged with crisp pixels rather than left as a stamp in a big empty box."""
    scale = cell / max(image.width, image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size == image.size:
        return image
    method = Image.Resampling.NEAREST if scale >= 2 else Image.Resampling.LANCZOS
    return image.resize(size, method)


def read_best(run_dir: RunDir) -> dict[str, Any] | None:
    try:
        data = json.loads(run_dir.best_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def write_sheet(run_dir: RunDir | str | os.PathLike, out: str | os.PathLike, seed: int | None = None,
                layout: SheetLayout = SheetLayout()) -> tuple[Path, Sheet]:
    """Render a run's contact sheet to `out` (PNG, written atomically). Returns the path and the sheet."""
    from engine import atomic
    import io

    sheet = load_sheet(run_dir, seed)
    best = read_best(sheet.run_dir)
    img = render_sheet(sheet, layout, best=(best or {}).get("checkpoint"))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    out = Path(out)
    atomic.write_bytes(out, buf.getvalue())
    return out, sheet


def write_best(run_dir: RunDir | str | os.PathLike, column: str, now: float | None = None,
               **extra: Any) -> dict[str, Any]:
    """Mark a checkpoint (a sample column's name) as the run's best: `best.json`, written atomically."""
    import time
    from datetime import datetime, timezone

    from engine import atomic
    from engine.rundir import parse_checkpoint_name

    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    parsed = parse_checkpoint_name(column)
    if parsed is None:
        raise ValueError(f"{column!r} is not a checkpoint name (eNNNN-sNNNNNNNN)")
    t = time.time() if now is None else now
    record = {"checkpoint": column, "epoch": parsed[0], "step": parsed[1], "t": round(t, 3),
              "time": datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"), **extra}
    atomic.write_json(run_dir.best_path, record)
    return record
