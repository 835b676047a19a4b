"""The contact sheet as data and as a PNG (`engine.contact_sheet`, `tunelab grid`)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from engine.contact_sheet import SheetLayout, load_sheet, read_best, write_best, write_sheet
from engine.rundir import RunDir, checkpoint_name, sample_name

PROMPTS = [
    {"text": "a photo of the city at night", "kind": "preservation"},
    {"text": "sks dog on the beach", "kind": "flexibility"},
    {"text": "sks dog", "kind": "accuracy"},
    {"text": "a watercolour of sks dog", "kind": "flexibility"},
]


def make_samples(run: RunDir, columns=((0, 0), (1, 10), (2, 20)), seeds=(42, 7), prompts=PROMPTS,
                 skip=(), size=16, with_json=True) -> None:
    """Sample folders as the trainer writes them: PNGs and a samples.json per column."""
    for epoch, step in columns:
        folder = run.samples_dir / checkpoint_name(epoch, step)
        folder.mkdir(parents=True, exist_ok=True)
        for p in range(len(prompts)):
            for seed in seeds:
                if (epoch, p, seed) in skip:
                    continue
                shade = (epoch * 60 + p * 40 + seed) % 256
                Image.new("RGB", (size, size), (shade, 255 - shade, 128)).save(folder / sample_name(p, seed))
        if with_json:
            (folder / "samples.json").write_text(json.dumps({
                "epoch": epoch, "step": step, "seeds": list(seeds), "guidance": 7.5, "steps": 25,
                "prompts": prompts}))


def test_rows_are_grouped_by_goal_kind_and_columns_start_at_epoch_zero(tmp_path):
    run = RunDir(tmp_path / "runs" / "20260101-000000-x")
    make_samples(run, skip={(2, 1, 42)})
    sheet = load_sheet(run)
    assert [p.kind for p in sheet.rows] == ["accuracy", "flexibility", "flexibility", "preservation"]
    assert [p.index for p in sheet.rows] == [2, 1, 3, 0]
    assert [c.label for c in sheet.columns] == ["base", "epoch 1 · step 10", "epoch 2 · step 20"]
    assert sheet.seeds == [7, 42] and sheet.seed == 7
    assert [k for k, _ in sheet.groups()] == ["accuracy", "flexibility", "preservation"]
    assert load_sheet(run, 42).cell_path(1, 2) is None  # prompt 1, epoch 2, seed 42 is missing
    assert load_sheet(run, 7).cell_path(1, 2) is not None
    assert sheet.rows[0].guidance == 7.5 and sheet.rows[0].steps == 25


def test_a_folder_without_samples_json_still_shows_its_images_by_prompt_index(tmp_path):
    run = RunDir(tmp_path / "runs" / "20260101-000000-x")
    make_samples(run, columns=((0, 0),), seeds=(42,), with_json=False)
    sheet = load_sheet(run)
    assert [p.text for p in sheet.rows] == ["prompt 0", "prompt 1", "prompt 2", "prompt 3"]
    assert sheet.filled() == 4


def test_the_png_is_rows_by_columns_with_empty_boxes_for_missing_cells(tmp_path):
    run = RunDir(tmp_path / "runs" / "20260101-000000-x")
    make_samples(run, skip={(2, 0, 7)})
    layout = SheetLayout(cell=32)
    out, sheet = write_sheet(run, tmp_path / "sheet.png", seed=7, layout=layout)
    with Image.open(out) as img:
        assert img.size == layout.size(4, 3, 3)
        assert img.size == (layout.label_width + 3 * (32 + layout.gap) + layout.gap,
                            layout.title_height + layout.header_height + 3 * layout.group_height
                            + 4 * (32 + layout.gap) + layout.gap)
        # The preservation row (last) at epoch 2 is missing: its cell's centre is background, not image.
        x = layout.label_width + layout.gap + 2 * (32 + layout.gap) + 16
        y = img.size[1] - layout.gap - 32 + 16
        assert img.getpixel((x, y)) == (24, 24, 28)
        # …while the cell beside it holds the image.
        assert img.getpixel((x - (32 + layout.gap), y)) != (24, 24, 28)


def test_small_samples_fill_their_cell_with_crisp_pixels(tmp_path):
    run = RunDir(tmp_path / "runs" / "20260101-000000-x")
    make_samples(run, columns=((0, 0),), seeds=(7,), size=16)
    layout = SheetLayout(cell=64)
    out, sheet = write_sheet(run, tmp_path / "sheet.png", seed=7, layout=layout)
    first = sheet.cell_path(0, 0)
    with Image.open(first) as src:
        colour = src.getpixel((0, 0))
    x0 = layout.label_width + layout.gap
    y0 = layout.title_height + layout.header_height + layout.group_height + layout.gap
    with Image.open(out) as img:  # a 16 px image scaled 4x: its corners reach the cell's corners
        assert img.getpixel((x0 + 1, y0 + 1)) == colour
        assert img.getpixel((x0 + 62, y0 + 62)) == colour


def test_best_json_is_written_atomically_and_read_back(tmp_path):
    run = RunDir(tmp_path / "runs" / "20260101-000000-x")
    run.path.mkdir(parents=True)
    record = write_best(run, "e0002-s00000020", now=1_780_000_000)
    assert read_best(run) == record
    assert record["checkpoint"] == "e0002-s00000020" and record["epoch"] == 2 and record["step"] == 20
    assert record["time"] == "2026-05-28T20:26:40Z"
    assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp")]


def test_tunelab_grid_writes_the_sheet_and_finds_a_run_by_id(tmp_path):
    project = tmp_path / "projects" / "p"
    run = RunDir(project / "runs" / "20260101-000000-x")
    make_samples(run, seeds=(42,))
    (run.path / "config.toml").write_text("")
    env_root = Path(__file__).resolve().parent.parent
    res = subprocess.run([sys.executable, "-m", "tui.cli", "grid", run.run_id, "-o", "out.png", "--cell", "24"],
                         cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(env_root),
                                                                           "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "out.png"
    assert "4 prompts × 3 columns (base + 2 checkpoints), seed 42, 12 of 12 cells filled" in res.stderr
    with Image.open(tmp_path / "out.png") as img:
        assert img.size == SheetLayout(cell=24).size(4, 3, 3)
    bad = subprocess.run([sys.executable, "-m", "tui.cli", "grid", run.run_id, "--seed", "5"],
                         cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(env_root),
                                                                           "PATH": "/usr/bin:/bin"})
    assert bad.returncode == 1 and "seed 5 has no samples; seeds with samples: 42" in bad.stderr


def test_the_sheet_shape_counts_the_base_column_apart_from_checkpoints_in_right_plurals(tmp_path):
    one = RunDir(tmp_path / "runs" / "20260101-000000-one")
    make_samples(one, columns=((0, 0), (1, 10)), prompts=PROMPTS[:1])
    assert load_sheet(one).shape() == "1 prompt × 2 columns (base + 1 checkpoint)"
    no_base = RunDir(tmp_path / "runs" / "20260101-000000-nobase")  # sample.at_start = false
    make_samples(no_base, columns=((1, 10),), prompts=PROMPTS[:2])
    assert load_sheet(no_base).shape() == "2 prompts × 1 checkpoint"


def test_tunelab_grid_seed_all_writes_one_sheet_per_seed(tmp_path):
    run = RunDir(tmp_path / "runs" / "20260101-000000-x")
    make_samples(run, seeds=(42, 7))
    (run.path / "config.toml").write_text("")
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent.parent), "PATH": "/usr/bin:/bin"}
    res = subprocess.run([sys.executable, "-m", "tui.cli", "grid", str(run.path), "-o", "s.png", "--seed", "all",
                          "--cell", "24"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["s-s7.png", "s-s42.png"]
    assert "seed 7, 12 of 12" in res.stderr and "seed 42, 12 of 12" in res.stderr
    with Image.open(tmp_path / "s-s7.png") as a, Image.open(tmp_path / "s-s42.png") as b:
        assert a.size == b.size and a.tobytes() != b.tobytes()
    bad = subprocess.run([sys.executable, "-m", "tui.cli", "grid", str(run.path), "--seed", "x"], cwd=tmp_path,
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "'x': a seed number or `all`" in bad.stderr


def pivotal_events(run: RunDir, switch: int, resumed_at: int | None = None) -> None:
    """The `phase` events a pivotal run writes (a resumed attempt repeats the phase it resumes in)."""
    lines = [{"t": 1, "kind": "phase", "phase": "textual_inversion", "step": 0, "until_step": switch},
             {"t": 2, "kind": "progress", "step": 1},
             {"t": 3, "kind": "phase", "phase": "lora", "step": switch, "embeddings_frozen": True}]
    if resumed_at is not None:
        lines.append({"t": 4, "kind": "phase", "phase": "lora", "step": switch, "resumed_at": resumed_at})
    run.path.mkdir(parents=True, exist_ok=True)
    run.events_path.write_text("".join(json.dumps(e) + "\n" for e in lines))


def test_a_pivotal_runs_columns_say_which_phase_trained_them_in_grid_and_png(tmp_path):
    from engine.contact_sheet import column_header, render_sheet

    run = RunDir(tmp_path / "runs" / "20260101-000000-piv")
    make_samples(run, columns=((0, 0), (1, 10), (2, 20), (3, 30)), seeds=(42,))
    pivotal_events(run, switch=20)  # steps 1-20 textual inversion, then LoRA
    sheet = load_sheet(run)
    assert [c.phase for c in sheet.columns] == ["", "textual_inversion", "textual_inversion", "lora"]
    assert [c.label for c in sheet.columns] == ["base", "epoch 1 · step 10 · TI", "epoch 2 · step 20 · TI",
                                                "epoch 3 · step 30 · LoRA"]
    assert column_header(3, 30, "LoRA") == ("epoch 3", "step 30 · LoRA")
    assert render_sheet(sheet).size == SheetLayout().size(4, 4, 3)

    # Still in textual inversion (no LoRA phase event yet): every trained column is TI.
    other = RunDir(tmp_path / "runs" / "20260101-000001-piv")
    make_samples(other, columns=((0, 0), (1, 10)), seeds=(42,))
    other.events_path.write_text(json.dumps({"t": 1, "kind": "phase", "phase": "textual_inversion", "step": 0,
                                             "until_step": 40}) + "\n")
    assert [c.phase for c in load_sheet(other).columns] == ["", "textual_inversion"]
    # A run with no phase events (any other method) has no phase marks.
    plain = RunDir(tmp_path / "runs" / "20260101-000002-lora")
    make_samples(plain, columns=((0, 0), (1, 10)), seeds=(42,))
    assert [c.label for c in load_sheet(plain).columns] == ["base", "epoch 1 · step 10"]


def test_phases_are_followed_as_the_events_grow(tmp_path):
    run = RunDir(tmp_path / "runs" / "20260101-000000-piv")
    make_samples(run, columns=((0, 0), (1, 10)), seeds=(42,))
    run.events_path.write_text(json.dumps({"t": 1, "kind": "phase", "phase": "textual_inversion", "step": 0,
                                           "until_step": 10}) + "\n")
    assert [c.phase for c in load_sheet(run).columns] == ["", "textual_inversion"]
    make_samples(run, columns=((2, 20),), seeds=(42,))
    with open(run.events_path, "a") as f:
        f.write(json.dumps({"t": 2, "kind": "phase", "phase": "lora", "step": 10}) + "\n")
    assert [c.phase for c in load_sheet(run).columns] == ["", "textual_inversion", "lora"]


def resume_adds_seed(run: RunDir, columns, seed: int, steps: int, prompts=PROMPTS) -> None:
    """What a resume with `--set sample.seeds=[…, seed] sample.steps=N` leaves in earlier columns: the new
    seed's images and samples.json merged by the trainer's own `merged_samples_json`."""
    from types import SimpleNamespace

    from engine.train.sampling import merged_samples_json

    current = [SimpleNamespace(text=p["text"], kind=p["kind"], seeds=[42, seed], guidance=7.5, steps=steps,
                               negative_prompt="") for p in prompts]
    for epoch, step in columns:
        folder = run.samples_dir / checkpoint_name(epoch, step)
        old = json.loads((folder / "samples.json").read_text())
        old.update(width=16, height=16, scheduler="dpm++")
        old["prompts"] = [{"index": i, **p, "seeds": [42], "guidance": 7.5, "steps": 25, "negative_prompt": ""}
                          for i, p in enumerate(prompts)]
        only = {(i, seed) for i in range(len(prompts))}
        merged = merged_samples_json(old, current, only, {"width": 16, "height": 16, "scheduler": "dpm++"})
        (folder / "samples.json").write_text(json.dumps(merged))
        for i in range(len(prompts)):
            Image.new("RGB", (16, 16), (10 * i, 200, 30)).save(folder / sample_name(i, seed))


def test_cells_a_resume_rendered_later_say_so_with_the_settings_they_differ_in(tmp_path):
    """`tunelab resume --set sample.seeds=[42, 7] sample.steps=40`: the earlier columns get seed 7 at 40
    steps while their own cells had 25. The sheet says which cells those are and how they differ; a
    column rendered after the resume (all at 40 steps) is its own reference, so nothing differs there."""
    run = RunDir(tmp_path / "runs" / "20260101-000000-x")
    make_samples(run, columns=((0, 0), (1, 10)), seeds=(42,))
    resume_adds_seed(run, ((0, 0), (1, 10)), seed=7, steps=40)
    make_samples(run, columns=((2, 20),), seeds=(42, 7))  # after the resume
    after = run.samples_dir / checkpoint_name(2, 20) / "samples.json"
    after.write_text(json.dumps({**json.loads(after.read_text()), "steps": 40,
                                 "prompts": [{**p, "steps": 40} for p in PROMPTS]}))

    seven = load_sheet(run, 7)
    later = seven.later_cells()
    assert set(later) == {(r, c) for r in range(4) for c in (0, 1)}
    render = later[(0, 1)]
    assert render.later and render.settings["steps"] == 40 and render.differs == {"steps": (25, 40)}
    assert seven.cell_render(0, 2).later is False and seven.cell_render(0, 2).settings["steps"] == 40
    # Seed 42 was rendered with each column: nothing later; each cell has its column's own steps.
    first = load_sheet(run, 42)
    assert first.later_cells() == {}
    assert [first.cell_render(0, c).settings["steps"] for c in range(3)] == [25, 25, 40]

    from engine.contact_sheet import later_legend
    assert later_legend(later) == ("8 cell(s) rendered later, on resume (new prompts or seeds), with other "
                                   "settings than their column: steps 40 (column: 25)")
    # The PNG marks them and has one legend line more; seed 42's has none.
    out, _ = write_sheet(run, tmp_path / "seven.png", seed=7, layout=SheetLayout(cell=32))
    with Image.open(out) as img:
        assert img.size == SheetLayout(cell=32).size(4, 3, 3, notes=1)
        layout = SheetLayout(cell=32)
        x0 = layout.label_width + layout.gap + 1 * (32 + layout.gap)  # column 1
        y0 = layout.title_height + layout.header_height + layout.group_height + layout.gap  # first row
        assert img.getpixel((x0 + 30, y0 + 1)) == (90, 170, 240)  # the corner mark
        x2 = layout.label_width + layout.gap + 2 * (32 + layout.gap)
        assert img.getpixel((x2 + 30, y0 + 1)) != (90, 170, 240)  # rendered with its column: no mark
    out, _ = write_sheet(run, tmp_path / "first.png", seed=42, layout=SheetLayout(cell=32))
    with Image.open(out) as img:
        assert img.size == SheetLayout(cell=32).size(4, 3, 3)
    # tunelab grid says it as well.
    r = subprocess.run([sys.executable, "-m", "tui.cli", "grid", str(run.path), "--seed", "7", "-o",
                        str(tmp_path / "cli.png")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "8 cell(s) rendered later, on resume" in r.stderr and "steps 40 (column: 25)" in r.stderr
