#!/usr/bin/env python3
"""Did the demo fine-tune learn its colours? A number per saved epoch, from a run's samples.

    python scripts/demo_learning.py RUN_DIR [--json] [--cells] [--min 0.75]

For every sample column (`RUN_DIR/samples/e0005-s00001200/`, epoch 0 = before training), every
prompt that names exactly one of the demo's colours (`engine.demo.COLOURS`) and every seed, the
image's shape colour is found and compared with the prompted colour:

- background: the median of the image's 2-pixel border (the demo's shapes never cover it);
- foreground: the pixels whose CIELAB distance from the background is at least half the largest
  distance in the image (and at least `MIN_DELTA_E`), which drops the anti-aliased rim;
- its colour: the per-channel median of those pixels, named by the nearest demo colour in CIELAB.
  An image with almost no foreground (no shape drawn) counts as wrong.

A cell is correct when that name is the prompted colour. The report gives the fraction of correct
cells per column, overall and per goal kind (accuracy: trained pairs; flexibility: held-out pairs),
and chance level, 1 / number of demo colours. The base model ignores colour words, so epoch 0
should sit near chance; a fine-tune that learned the words ends well above it.

Prompts come from `RUN_DIR/samples/samples.json` (or a column's own `samples.json`), else from
the run's frozen `config.toml` `[sample] prompts`, else from the project's goals. PIL and numpy
only: it runs wherever the samples are, without torch.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.demo import COLOURS  # noqa: E402
from engine.rundir import parse_checkpoint_name, parse_sample_name  # noqa: E402

GOAL_KINDS = ("accuracy", "flexibility", "preservation")

MIN_DELTA_E = 15.0  # below this a pixel is background whatever the image's contrast
MIN_FOREGROUND = 0.01  # fraction of pixels: less than this is "no shape drawn"
BORDER = 2


# --- colour --------------------------------------------------------------------------------


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB in 0..1 (any shape ending in 3) to CIELAB (D65)."""
    rgb = np.asarray(rgb, dtype=np.float64)
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.4124564, 0.3575761, 0.1804375],
                  [0.2126729, 0.7151522, 0.0721750],
                  [0.0193339, 0.1191920, 0.9503041]])
    xyz = lin @ m.T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)


PALETTE_NAMES = list(COLOURS)
PALETTE_LAB = srgb_to_lab(np.array([COLOURS[c] for c in PALETTE_NAMES]))


def nearest_colour(rgb: np.ndarray | tuple[float, float, float]) -> str:
    """The demo colour nearest (CIELAB distance) to an sRGB colour in 0..1."""
    lab = srgb_to_lab(np.asarray(rgb, dtype=np.float64))
    return PALETTE_NAMES[int(np.argmin(np.linalg.norm(PALETTE_LAB - lab, axis=-1)))]


@dataclass
class ShapeColour:
    rgb: tuple[float, float, float] | None  # None: no shape found
    background: tuple[float, float, float]
    foreground_fraction: float
    name: str | None


def shape_colour(image: Image.Image | np.ndarray) -> ShapeColour:
    """The colour of the shape in a picture of one shape on a plain background (see module doc)."""
    arr = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image, dtype=np.float64)
    if arr.max() > 1.0:
        arr = arr / 255.0
    h, w, _ = arr.shape
    b = min(BORDER, h // 4, w // 4) or 1
    border = np.concatenate([arr[:b].reshape(-1, 3), arr[-b:].reshape(-1, 3),
                             arr[:, :b].reshape(-1, 3), arr[:, -b:].reshape(-1, 3)])
    bg = np.median(border, axis=0)
    delta = np.linalg.norm(srgb_to_lab(arr) - srgb_to_lab(bg), axis=-1)
    fg = delta >= max(MIN_DELTA_E, 0.5 * float(delta.max()))
    fraction = float(fg.mean())
    bg_t = tuple(float(v) for v in bg)
    if fraction < MIN_FOREGROUND:
        return ShapeColour(None, bg_t, fraction, None)  # type: ignore[arg-type]
    rgb = np.median(arr[fg], axis=0)
    return ShapeColour(tuple(float(v) for v in rgb), bg_t, fraction, nearest_colour(rgb))  # type: ignore[arg-type]


def prompt_colour(text: str) -> str | None:
    """The one demo colour a prompt names, or None (no colour, or more than one)."""
    words = set(re.findall(r"[a-z]+", text.lower()))
    named = [c for c in PALETTE_NAMES if c in words]
    return named[0] if len(named) == 1 else None


# --- the run's prompts -----------------------------------------------------------------------


@dataclass
class Prompt:
    text: str
    kind: str = "other"


def _prompts_from_json(data: Any) -> dict[int, Prompt] | None:
    items = data.get("prompts") if isinstance(data, dict) else data
    if not isinstance(items, list):
        return None
    out: dict[int, Prompt] = {}
    for i, item in enumerate(items):
        if isinstance(item, str):
            out[i] = Prompt(item)
        elif isinstance(item, dict):
            text = item.get("text", item.get("prompt"))
            if not isinstance(text, str):
                continue
            idx = item.get("index", i)
            out[int(idx) if isinstance(idx, int) else i] = Prompt(text, str(item.get("kind") or "other"))
    return out


def load_prompts(run_dir: Path, column: Path | None = None) -> dict[int, Prompt]:
    """Prompt index -> prompt, from samples.json, else the frozen config, else the project's goals."""
    for candidate in ([column / "samples.json"] if column else []) + [run_dir / "samples" / "samples.json"]:
        try:
            found = _prompts_from_json(json.loads(candidate.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
        if found:
            return found
    try:
        cfg = tomllib.loads((run_dir / "config.toml").read_text(encoding="utf-8"))
        items = cfg.get("sample", {}).get("prompts", [])
    except (OSError, tomllib.TOMLDecodeError):
        items = []
    found = _prompts_from_json(items)
    if found:
        return found
    # No prompts in the config: the trainer samples the project's goals, in kind order.
    try:
        project = tomllib.loads((run_dir.parent.parent / "project.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}
    goals = project.get("goals", {})
    texts = [Prompt(t, k) for k in GOAL_KINDS for t in goals.get(k, []) if isinstance(t, str)]
    return dict(enumerate(texts))


# --- the measure -----------------------------------------------------------------------------


@dataclass
class Cell:
    prompt_index: int
    prompt: str
    kind: str
    seed: int
    expected: str
    got: str | None
    rgb: tuple[float, float, float] | None
    correct: bool


@dataclass
class Column:
    name: str
    epoch: int
    step: int
    correct: int = 0
    total: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)  # kind -> [correct, total]
    cells: list[Cell] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return self.correct / self.total if self.total else 0.0


def measure_column(column_dir: Path, prompts: dict[int, Prompt], epoch: int = 0, step: int = 0) -> Column:
    col = Column(column_dir.name, epoch, step)
    for path in sorted(column_dir.iterdir()):
        parsed = parse_sample_name(path.name)
        if not parsed:
            continue
        idx, seed = parsed
        prompt = prompts.get(idx)
        expected = prompt_colour(prompt.text) if prompt else None
        if prompt is None or expected is None:
            continue
        try:
            with Image.open(path) as img:
                found = shape_colour(img)
        except OSError:
            continue  # a sample still being written
        ok = found.name == expected
        col.cells.append(Cell(idx, prompt.text, prompt.kind, seed, expected, found.name, found.rgb, ok))
        col.correct += ok
        col.total += 1
        tally = col.by_kind.setdefault(prompt.kind, [0, 0])
        tally[0] += ok
        tally[1] += 1
    return col


def measure_run(run_dir: str | Path) -> dict[str, Any]:
    """The learning curve of a demo run: one entry per sample column, oldest first."""
    run_dir = Path(run_dir)
    samples = run_dir / "samples"
    found = []
    for d in samples.iterdir():
        parsed = parse_checkpoint_name(d.name)
        if parsed and d.is_dir():
            found.append((parsed[1], parsed[0], d))  # sorted by step, then epoch
    columns = [measure_column(d, load_prompts(run_dir, d), epoch, step) for step, epoch, d in sorted(found)]
    return {
        "run": str(run_dir),
        "colours": PALETTE_NAMES,
        "chance": 1 / len(PALETTE_NAMES),
        "columns": [
            {"name": c.name, "epoch": c.epoch, "step": c.step, "correct": c.correct, "total": c.total,
             "fraction": c.fraction, "by_kind": {k: {"correct": v[0], "total": v[1]} for k, v in c.by_kind.items()},
             "cells": [asdict(cell) for cell in c.cells]}
            for c in columns
        ],
    }


def format_report(result: dict[str, Any], cells: bool = False) -> str:
    kinds = [k for k in ("accuracy", "flexibility", "preservation", "other")
             if any(k in c["by_kind"] for c in result["columns"])]
    lines = [f"run: {result['run']}",
             f"colours: {', '.join(result['colours'])}   chance: {result['chance']:.0%}",
             "",
             f"{'epoch':>5} {'step':>7}  " + "".join(f"{k:>15}" for k in kinds) + f"{'all':>15}"]

    def cell_text(correct: int, total: int) -> str:
        return f"{correct}/{total} {correct / total:4.0%}" if total else "-"

    for c in result["columns"]:
        row = f"{c['epoch']:>5} {c['step']:>7}  "
        for k in kinds:
            t = c["by_kind"].get(k)
            row += f"{cell_text(t['correct'], t['total']) if t else '-':>15}"
        row += f"{cell_text(c['correct'], c['total']):>15}"
        lines.append(row)
        if cells:
            for cell in c["cells"]:
                mark = "ok " if cell["correct"] else "   "
                lines.append(f"        {mark} p{cell['prompt_index']:02d} s{cell['seed']:<5} {cell['prompt']!r}: "
                             f"got {cell['got']}")
    if not result["columns"]:
        lines.append("(no sample columns yet)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/demo_learning.py", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a demo run directory (projects/demo/runs/<run-id>)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--cells", action="store_true", help="list every prompt x seed with the colour found")
    parser.add_argument("--min", type=float, default=None, metavar="FRACTION",
                        help="exit 1 unless the last column scores at least FRACTION")
    args = parser.parse_args(argv)
    if not (args.run_dir / "samples").is_dir():
        print(f"{args.run_dir}: no samples/ folder: not a run directory, or no samples yet", file=sys.stderr)
        return 2
    result = measure_run(args.run_dir)
    print(json.dumps(result, indent=1) if args.json else format_report(result, cells=args.cells))
    if args.min is not None:
        last = result["columns"][-1]["fraction"] if result["columns"] else 0.0
        if last < args.min:
            print(f"last column scores {last:.0%} < {args.min:.0%}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
