"""Helpers for the trainer tests: a small project of drawn shapes and a run directory with a frozen config."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.config import RunConfig, dump_config
from engine.rundir import RunDir

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (30, 60, 220), "yellow": (240, 220, 30)}
SHAPES = ("circle", "square")


def make_project(root: Path, *, n: int = 4, size: int = 40, goals: bool = True, bad: int = 0) -> Path:
    """`root/proj` with `n` captioned images (and `bad` unreadable ones) in `images/`."""
    from PIL import Image, ImageDraw

    proj = root / "proj"
    (proj / "images").mkdir(parents=True, exist_ok=True)
    lines = ['name = "proj"']
    if goals:
        lines += ["[goals]", 'accuracy = ["a red circle"]', 'preservation = ["a blue square"]']
    (proj / "project.toml").write_text("\n".join(lines) + "\n")
    colours = list(COLOURS)
    for i in range(n):
        colour, shape = colours[i % len(colours)], SHAPES[i % len(SHAPES)]
        im = Image.new("RGB", (size + 8 * (i % 3), size), (235, 235, 235))
        d = ImageDraw.Draw(im)
        box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
        (d.ellipse if shape == "circle" else d.rectangle)(box, fill=COLOURS[colour])
        im.save(proj / "images" / f"img{i:02d}.png")
        (proj / "images" / f"img{i:02d}.txt").write_text(f"a {colour} {shape}\n")
    for j in range(bad):
        (proj / "images" / f"broken{j}.png").write_bytes(b"not a png at all")
        (proj / "images" / f"broken{j}.txt").write_text("a broken image\n")
    return proj


def tiny_config(method: str = "lora", **changes: Any) -> RunConfig:
    """A config that trains in seconds on a CPU: 32 px, rank 4, few steps, 2 sample steps."""
    cfg = RunConfig(method=method)  # type: ignore[arg-type]
    cfg.model.base = "tiny"
    cfg.data.resolution = 32
    cfg.train.epochs = 2
    cfg.train.batch_size = 2
    cfg.train.learning_rate = 1e-3
    cfg.train.log_every = 1
    cfg.lora.rank = 4
    cfg.lora.alpha = 8.0
    cfg.sample.steps = 2
    cfg.sample.seeds = [1]
    cfg.sample.scheduler = "ddim"
    for key, value in changes.items():
        node = cfg
        parts = key.split(".")
        for p in parts[:-1]:
            node = getattr(node, p)
        setattr(node, parts[-1], value)
    return cfg


def make_run(project: Path, cfg: RunConfig, run_id: str = "20260101-000000-test") -> RunDir:
    run = RunDir(project / "runs" / run_id)
    run.path.mkdir(parents=True)
    (run.path / "config.toml").write_text(dump_config(cfg))
    return run


def events(run: RunDir, kind: str | None = None) -> list[dict[str, Any]]:
    out = [json.loads(line) for line in run.events_path.read_text().splitlines() if line.strip()]
    return [e for e in out if kind is None or e["kind"] == kind]
