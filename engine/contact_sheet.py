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

(a prompt may also be a plain string). The PNG (`render_sheet`) uses PIL only, with PIL's default font,
and is shared by `tunelab grid` and the TUI's Compare tab (`e`), so both export the same picture.
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


def column_label(epoch: int, step: int) -> str:
    return "base" if epoch == 0 else f"epoch {epoch} · step {step}"


@dataclass
class Sheet:
    """What a contact sheet shows for one seed. `rows` are prompts in display order (grouped by kind)."""

    run_dir: RunDir
    rows: list[SheetPrompt]
    columns: list[SheetColumn]
    seeds: list[int]
    seed: int | None
    files: dict[str, set[str]] = field(default_factory=dict)  # column name -> png names present

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

    def filled(self) -> int:
        return sum(1 for r in range(len(self.rows)) for c in range(len(self.columns)) if self.cell_path(r, c))

    def column_info(self, col: int) -> dict[str, Any]:
        """The column's `samples.json` (empty when missing)."""
        return read_samples_json(self.run_dir.samples_dir / self.columns[col].name)


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
    for col in columns:
        folder = run_dir.samples_dir / col.name
        for p in _prompts_from_json(read_samples_json(folder)):
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
    return Sheet(run_dir, rows, columns, seed_list, seed, files)


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

    def size(self, n_rows: int, n_cols: int, n_groups: int) -> tuple[int, int]:
        width = self.label_width + n_cols * (self.cell + self.gap) + self.gap
        height = (self.title_height + self.header_height + n_groups * self.group_height
                  + n_rows * (self.cell + self.gap) + self.gap)
        return width, height


BACKGROUND = (24, 24, 28)
FOREGROUND = (230, 230, 230)
MUTED = (150, 150, 160)
ACCENT = (240, 190, 80)
EMPTY = (60, 60, 68)


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
    into square cells) and an empty box for every missing cell. `best` outlines that column."""
    groups = sheet.groups()
    width, height = layout.size(len(sheet.rows), len(sheet.columns), len(groups))
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
            y += cell + gap
    return img


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
