"""The demo's learning measure (`scripts/demo_learning.py`): does a sample show the prompted colour?"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFilter

from engine import demo

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "demo_learning.py"

_spec = importlib.util.spec_from_file_location("demo_learning", SCRIPT)
dl = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
sys.modules.setdefault("demo_learning", dl)  # dataclasses look their module up there
_spec.loader.exec_module(dl)  # type: ignore[union-attr]


def disc(colour, background=(220, 220, 220), size=64, radius=14, centre=(32, 32), blur=0.0) -> Image.Image:
    img = Image.new("RGB", (size, size), background)
    x, y = centre
    ImageDraw.Draw(img).ellipse((x - radius, y - radius, x + radius, y + radius), fill=colour)
    return img.filter(ImageFilter.GaussianBlur(blur)) if blur else img


def rgb(name: str) -> tuple[int, int, int]:
    return demo.rgb8(demo.COLOURS[name])


def test_a_red_disc_scores_as_red():
    assert dl.shape_colour(disc((230, 25, 25))).name == "red"


@pytest.mark.parametrize("name", list(demo.COLOURS))
@pytest.mark.parametrize("background", list(demo.BACKGROUNDS.values()))
def test_every_demo_colour_is_named_on_every_demo_background(name, background):
    assert dl.shape_colour(disc(rgb(name), background, blur=1.5)).name == name


def test_the_shape_colour_wins_over_a_coloured_background():
    # The base model often paints the background too; the border tells which colour is background.
    assert dl.shape_colour(disc(rgb("blue"), background=rgb("red"), radius=20)).name == "blue"
    assert dl.shape_colour(disc(rgb("yellow"), background=(40, 120, 60))).name == "yellow"


def test_a_dull_off_palette_colour_goes_to_the_nearest_demo_colour():
    assert dl.shape_colour(disc((180, 60, 40))).name == "red"
    assert dl.shape_colour(disc((60, 90, 200))).name == "blue"


def test_an_image_without_a_shape_names_no_colour():
    found = dl.shape_colour(Image.new("RGB", (64, 64), (200, 200, 200)))
    assert found.name is None and found.rgb is None


def test_every_generated_demo_image_scores_as_its_metadata_colour(tmp_path):
    images, _ = demo.ensure_demo(tmp_path)
    for item in demo.demo_spec():
        with Image.open(images / item.file_name) as img:
            assert dl.shape_colour(img).name == item.colour, item.file_name


@pytest.mark.parametrize("prompt,colour", [
    ("a red circle", "red"), ("A Cyan star, plain background", "cyan"), ("a circle", None),
    ("a red and blue square", None), ("a reddish circle", None),
])
def test_prompt_colour_finds_the_one_colour_word(prompt, colour):
    assert dl.prompt_colour(prompt) == colour


# --- whole runs ---------------------------------------------------------------------------------

PROMPTS = [
    {"text": "a red circle", "kind": "accuracy"},
    {"text": "a blue star", "kind": "flexibility"},
    {"text": "a circle", "kind": "preservation"},
]
SEEDS = [1, 2]


def fake_run(tmp_path: Path, columns: dict[str, list[str]], samples_json: bool = True) -> Path:
    """A run dir whose sample columns hold discs: columns[name][i] is the colour drawn for cell i
    (prompts x seeds in order)."""
    run = tmp_path / "projects" / "demo" / "runs" / "20260101-000000-lora"
    for name, colours in columns.items():
        col = run / "samples" / name
        col.mkdir(parents=True)
        if samples_json:
            (col / "samples.json").write_text(json.dumps({"seeds": SEEDS, "prompts": PROMPTS}))
        cells = [(p, s) for p in range(len(PROMPTS)) for s in SEEDS]
        for (p, s), colour in zip(cells, colours):
            disc(rgb(colour)).save(col / f"p{p:02d}-s{s:04d}.png")
    return run


BASE = ["blue", "green", "yellow", "cyan", "red", "magenta"]  # ignores the prompt
TUNED = ["red", "red", "blue", "green", "red", "red"]  # red right twice, blue right once


def test_a_run_is_scored_per_column_on_prompts_that_name_a_colour(tmp_path):
    run = fake_run(tmp_path, {"e0000-s00000000": BASE, "e0005-s00000045": TUNED})
    result = dl.measure_run(run)
    assert result["chance"] == pytest.approx(1 / len(demo.COLOURS))
    base, tuned = result["columns"]
    assert (base["epoch"], tuned["epoch"], tuned["step"]) == (0, 5, 45)
    assert (base["correct"], base["total"]) == (0, 4)  # preservation prompts are not scored
    assert (tuned["correct"], tuned["total"]) == (3, 4)
    assert tuned["fraction"] == pytest.approx(0.75)
    assert tuned["by_kind"] == {"accuracy": {"correct": 2, "total": 2}, "flexibility": {"correct": 1, "total": 2}}


def test_columns_are_ordered_by_step_not_by_name(tmp_path):
    run = fake_run(tmp_path, {"e0010-s00000090": TUNED, "e0002-s00000018": BASE, "e0000-s00000000": BASE})
    assert [c["epoch"] for c in dl.measure_run(run)["columns"]] == [0, 2, 10]


def test_without_samples_json_prompts_come_from_the_frozen_config(tmp_path):
    run = fake_run(tmp_path, {"e0001-s00000009": TUNED}, samples_json=False)
    (run / "config.toml").write_text(
        '[[sample.prompts]]\ntext = "a red circle"\nkind = "accuracy"\n'
        '[[sample.prompts]]\ntext = "a blue star"\nkind = "flexibility"\n'
        '[[sample.prompts]]\ntext = "a circle"\nkind = "preservation"\n')
    assert dl.measure_run(run)["columns"][0]["correct"] == 3


def test_without_samples_json_or_config_prompts_come_from_the_project_goals(tmp_path):
    run = fake_run(tmp_path, {"e0001-s00000009": TUNED}, samples_json=False)
    (run.parent.parent / "project.toml").write_text(
        '[goals]\naccuracy = ["a red circle"]\nflexibility = ["a blue star"]\npreservation = ["a circle"]\n')
    col = dl.measure_run(run)["columns"][0]
    assert col["correct"] == 3 and set(col["by_kind"]) == {"accuracy", "flexibility"}


def test_the_command_line_prints_a_table_and_json_and_checks_a_minimum(tmp_path):
    run = fake_run(tmp_path, {"e0000-s00000000": BASE, "e0005-s00000045": TUNED})
    table = subprocess.run([sys.executable, str(SCRIPT), str(run)], capture_output=True, text=True, check=True)
    assert "chance: 17%" in table.stdout and "3/4  75%" in table.stdout
    js = subprocess.run([sys.executable, str(SCRIPT), str(run), "--json"], capture_output=True, text=True, check=True)
    assert json.loads(js.stdout)["columns"][1]["fraction"] == pytest.approx(0.75)
    assert subprocess.run([sys.executable, str(SCRIPT), str(run), "--min", "0.7"]).returncode == 0
    assert subprocess.run([sys.executable, str(SCRIPT), str(run), "--min", "0.8"],
                          capture_output=True).returncode == 1


def test_the_command_line_refuses_a_folder_without_samples(tmp_path):
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2 and "no samples/" in proc.stderr
