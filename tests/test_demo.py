"""The demo project: its generated dataset, its project.toml goals and its run configs."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from PIL import Image

from engine import demo

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "projects" / "demo"


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.suffix in (".png", ".csv")}


def test_ensure_writes_one_64px_image_per_metadata_row(tmp_path):
    images, wrote = demo.ensure_demo(tmp_path)
    assert wrote
    rows = list(csv.DictReader((images / "metadata.csv").open(encoding="utf-8")))
    pngs = sorted(p.name for p in images.glob("*.png"))
    assert sorted(r["file_name"] for r in rows) == pngs
    assert 48 <= len(pngs) <= 96
    with Image.open(images / pngs[0]) as img:
        assert img.size == (64, 64) and img.mode == "RGB"
    assert set(rows[0]) >= {"file_name", "color", "shape"}


def test_ensure_is_deterministic(tmp_path):
    a, _ = demo.ensure_demo(tmp_path / "a")
    b, _ = demo.ensure_demo(tmp_path / "b")
    assert _files(a) == _files(b)


def test_second_ensure_writes_nothing(tmp_path):
    images, _ = demo.ensure_demo(tmp_path)
    mtimes = {p.name: p.stat().st_mtime_ns for p in images.iterdir()}
    _, wrote = demo.ensure_demo(tmp_path)
    assert not wrote
    assert {p.name: p.stat().st_mtime_ns for p in images.iterdir()} == mtimes


def test_ensure_redraws_a_missing_image_and_removes_stale_ones(tmp_path):
    images, _ = demo.ensure_demo(tmp_path)
    first = demo.demo_spec()[0].file_name
    original = (images / first).read_bytes()
    (images / first).unlink()
    (images / "purple_ring_9.png").write_bytes(original)  # left over from an older demo version
    _, wrote = demo.ensure_demo(tmp_path)
    assert wrote
    assert (images / first).read_bytes() == original
    assert not (images / "purple_ring_9.png").exists()


def test_a_changed_spec_invalidates_the_stamp(tmp_path, monkeypatch):
    demo.ensure_demo(tmp_path)
    monkeypatch.setattr(demo, "DEMO_VERSION", demo.DEMO_VERSION + "-changed")
    assert not demo.is_current(tmp_path)
    _, wrote = demo.ensure_demo(tmp_path)
    assert wrote and demo.is_current(tmp_path)


def test_every_image_shows_its_metadata_colour_on_a_light_background(tmp_path):
    images, _ = demo.ensure_demo(tmp_path)
    for item in demo.demo_spec():
        with Image.open(images / item.file_name) as img:
            px = img.load()
            centre = px[int(item.cx), int(item.cy)]
            corner = px[0, 0]
        assert centre == demo.rgb8(demo.COLOURS[item.colour]), item
        assert min(corner) >= 200, item  # plain and light: shapes stand out in every colour


def test_held_out_pairs_are_never_trained_and_every_colour_has_three_shapes():
    pairs = {(i.colour, i.shape) for i in demo.demo_spec()}
    assert not pairs & set(demo.HELD_OUT)
    assert len(demo.HELD_OUT) == len(demo.COLOURS)
    for colour in demo.COLOURS:
        assert len({s for c, s in pairs if c == colour}) == len(demo.SHAPES) - 1


def test_the_committed_metadata_matches_the_generator():
    committed = (DEMO / "images" / "metadata.csv").read_text(encoding="utf-8")
    assert committed == demo.metadata_csv(demo.demo_spec()), "run `python -m engine.demo --ensure --force`"


def test_importing_the_demo_module_loads_no_torch():
    code = "import sys, engine.demo; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_the_command_line_reports_up_to_date_the_second_time(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "engine.demo", "--ensure", str(tmp_path)]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    assert "wrote 72 images" in first.stdout
    assert "up to date" in second.stdout


# --- project.toml -----------------------------------------------------------------------------

def _goals() -> dict[str, list[str]]:
    return tomllib.loads((DEMO / "project.toml").read_text(encoding="utf-8"))["goals"]


def _pair(prompt: str) -> tuple[str, str]:
    words = prompt.split()
    colours = [w for w in words if w in demo.COLOURS]
    shapes = [w for w in words if w in demo.SHAPES]
    assert len(colours) == 1 and len(shapes) == 1, prompt
    return colours[0], shapes[0]


def test_accuracy_goals_ask_for_trained_pairs_in_every_colour():
    pairs = [_pair(p) for p in _goals()["accuracy"]]
    assert set(pairs) <= set(demo.trained_pairs())
    assert {c for c, _ in pairs} == set(demo.COLOURS)


def test_flexibility_goals_ask_for_exactly_the_held_out_pairs():
    assert {_pair(p) for p in _goals()["flexibility"]} == set(demo.HELD_OUT)


def test_preservation_goals_name_no_colour():
    for prompt in _goals()["preservation"]:
        assert not set(prompt.split()) & set(demo.COLOURS), prompt


def test_the_project_scans_to_templated_captions(tmp_path):
    from engine.project import scan_project

    demo.ensure_demo(DEMO)
    ds = scan_project(DEMO, resolution=64, use_cache=False)
    assert not ds.problems and len(ds.items) == len(demo.demo_spec())
    by_name = {item.path.name: item for item in ds.items}
    assert by_name["red_circle_1.png"].caption == "a red circle"
    assert all(not item.flags for item in ds.items)


# --- run configs ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,method", [("lora", "lora"), ("full", "full")])
def test_demo_configs_load_and_train_the_tiny_model_at_64px(name, method):
    from engine.config import load_run_config

    cfg = load_run_config(DEMO / "configs" / f"{name}.toml")
    assert cfg.method == method
    assert cfg.model.base == "tiny" and cfg.data.resolution == 64
    assert cfg.save.epochs and cfg.save.epochs == sorted(cfg.save.epochs)
    assert cfg.save.epochs[-1] <= cfg.train.epochs
    assert 2 <= len(cfg.sample.seeds) <= 4
    assert not cfg.check()


def test_generated_files_get_the_mode_a_plain_write_would(tmp_path):
    old = os.umask(0o022)
    try:
        images, _ = demo.ensure_demo(tmp_path)
    finally:
        os.umask(old)
    modes = {p.name: p.stat().st_mode & 0o777 for p in images.iterdir()}
    assert set(modes.values()) == {0o644}, modes  # was 0600 (mkstemp's), unlike every other tunelab write
