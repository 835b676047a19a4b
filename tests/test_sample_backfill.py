"""Resuming with new sample prompts or seeds renders them for every checkpoint the run still has, so the
contact sheet compares the same prompts at every checkpoint; nothing existing is redrawn (tiny model)."""
from __future__ import annotations

import hashlib
import json

import pytest
from PIL import Image, ImageChops, ImageStat

from engine import atomic
from engine.contact_sheet import load_sheet
from engine.resume import plan_resume, write_changed_config
from engine.train.loop import train
from tests.train_fixtures import events, make_project, make_run, tiny_config

pytestmark = pytest.mark.timeout(300)


def finished_run(tmp_path, cfg):
    run = make_run(make_project(tmp_path, goals=False), cfg)
    assert train(run.path) == 0
    atomic.write_json(run.status_path, {"state": "finished", "attempt": 1, "run_id": run.run_id})
    return run


def files(run) -> dict[str, tuple[str, int]]:
    return {p.relative_to(run.samples_dir).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(run.samples_dir.rglob("*.png"))}


def pixel_distance(a, b) -> float:
    """Mean absolute difference per channel (0-255). A cell rendered again in a batch of another size may
    round a few pixels the other way (seen: 0.5% of them by 1/255 on one CPU, none on another); a
    neighbouring checkpoint of the tiny model differs by over 1 on average."""
    diff = ImageChops.difference(Image.open(a).convert("RGB"), Image.open(b).convert("RGB"))
    return sum(ImageStat.Stat(diff).mean) / 3


def resume_with(run, overrides):
    plan = plan_resume(run, overrides)
    write_changed_config(plan)
    atomic.write_json(run.status_path, {"state": "starting", "attempt": 2, "run_id": run.run_id})
    assert train(run.path, resume=True) == 0
    return plan


@pytest.mark.slow
@pytest.mark.parametrize("method,extra", [("lora", {}), ("full", {"train.ema": True, "train.ema_decay": 0.5})])
def test_new_prompts_and_seeds_are_rendered_for_every_kept_checkpoint_and_nothing_is_redrawn(tmp_path, method,
                                                                                          extra):
    from engine.config import SamplePrompt

    cfg = tiny_config(method, **{"train.epochs": 3, "save.every_n_epochs": 1,
                                 "sample.prompts": [SamplePrompt(text="a red circle")], **extra})
    run = finished_run(tmp_path, cfg)  # columns: base, e1, e2, e3 (the last: the checkpoint resumed from)
    cols = [c[0] for c in run.sample_columns()]
    assert cols == ["e0000-s00000000", "e0001-s00000002", "e0002-s00000004", "e0003-s00000006"]
    # e0002's image is taken away (kept aside) to see that a re-rendered cell is that checkpoint's picture.
    kept = tmp_path / "kept.png"
    kept.write_bytes((run.samples_dir / cols[2] / "p00-s0001.png").read_bytes())
    (run.samples_dir / cols[2] / "p00-s0001.png").unlink()
    # e0001's checkpoint lost its state (as with save.state = false): its column cannot be rendered again.
    import shutil

    shutil.rmtree(run.checkpoints_dir / cols[1] / "state")
    before = files(run)

    plan = resume_with(run, ['sample.prompts=["a red circle", "a blue square"]', "sample.seeds=[1, 2]"])
    assert plan.sample_only and plan.new_cells == 3  # a finished run: render only, train nothing

    after = files(run)
    assert {k: v for k, v in after.items() if k in before} == before  # not one existing image redrawn
    every = {"p00-s0001.png", "p00-s0002.png", "p01-s0001.png", "p01-s0002.png"}
    for col in (cols[0], cols[2], cols[3]):
        assert {k.split("/")[1] for k in after if k.startswith(col + "/")} == every, col
    assert {k.split("/")[1] for k in after if k.startswith(cols[1] + "/")} == {"p00-s0001.png"}
    assert pixel_distance(kept, run.samples_dir / cols[2] / "p00-s0001.png") < 0.1  # e0002's weights, EMA and all
    assert pixel_distance(kept, run.samples_dir / cols[3] / "p00-s0001.png") > 0.5
    assert pixel_distance(run.samples_dir / cols[0] / "p00-s0001.png", kept) > 0.5  # the base is the base
    warning = [w for w in events(run, "warning") if w.get("reason") == "backfill_unavailable"]
    assert len(warning) == 1 and warning[0]["columns"] == [cols[1]] and "saved without state/" in warning[0]["message"]

    # The contact sheet (tunelab grid, the Compare tab) shows both prompts in every rendered column.
    for seed in (1, 2):
        sheet = load_sheet(run, seed=seed)
        assert [r.text for r in sheet.rows] == ["a red circle", "a blue square"]
        assert sheet.filled() == 2 * 3 + 1 - (seed == 2)
    record = json.loads((run.samples_dir / cols[0] / "samples.json").read_text())
    assert [(p["text"], p["seeds"]) for p in record["prompts"]] == [("a red circle", [1, 2]), ("a blue square", [1, 2])]
    assert [(b["prompt"], b["seed"]) for b in record["backfilled"]] == [(0, 2), (1, 1), (1, 2)]
    # Nothing trained: no new checkpoint, the run finished again at its step.
    assert [c.name for c in [ck.path for ck in run.checkpoints(complete_only=True)]] == cols[1:]
    assert [e["step"] for e in events(run, "finished")] == [6, 6]
    assert all(e.get("backfill") for e in events(run, "sample_done")[4:])


@pytest.mark.slow
def test_a_resume_that_trains_on_also_fills_the_earlier_columns(tmp_path):
    from engine.config import SamplePrompt

    cfg = tiny_config(**{"train.epochs": 1, "sample.prompts": [SamplePrompt(text="a red circle")]})
    run = finished_run(tmp_path, cfg)
    resume_with(run, ["train.epochs=2", 'sample.prompts=["a red circle", "a blue square"]'])
    sheet = load_sheet(run, seed=1)
    assert [c.name for c in sheet.columns] == ["e0000-s00000000", "e0001-s00000002", "e0002-s00000004"]
    assert sheet.filled() == 2 * 3
    assert [e["step"] for e in events(run, "finished")] == [2, 4]


def test_a_finished_run_with_no_new_cells_is_still_refused(tmp_path):
    from engine.launch import LaunchError

    run = finished_run(tmp_path, tiny_config(**{"train.epochs": 1, "sample.at_start": False}))
    with pytest.raises(LaunchError, match=r"already finished .*\(or add sample prompts or seeds"):
        plan_resume(run, ["sample.steps=3"])  # changes settings only: nothing new to render


@pytest.mark.slow
@pytest.mark.parametrize("at_start", [True, False])
def test_a_run_launched_without_prompts_gets_a_column_for_every_checkpoint_on_resume(tmp_path, at_start):
    # No prompts and no goals: the run rendered no column at all. Resuming with a prompt renders it for
    # every checkpoint with state/ (was: only the resumed one, though resume said "every checkpoint"), and
    # for the base column unless sample.at_start = false.
    cfg = tiny_config(**{"train.epochs": 2, "save.every_n_steps": 1, "train.learning_rate": 2e-2,
                         "sample.at_start": at_start})
    run = finished_run(tmp_path, cfg)
    assert run.sample_columns() == []
    checkpoints = [ck.path.name for ck in run.checkpoints(complete_only=True)]
    assert checkpoints == ["e0000-s00000001", "e0001-s00000002", "e0001-s00000003", "e0002-s00000004"]
    plan = resume_with(run, ['sample.prompts=["a red circle"]'])
    assert plan.sample_only and plan.new_cells == 1
    sheet = load_sheet(run, seed=1)
    assert [c.name for c in sheet.columns] == ["e0000-s00000000"] * at_start + checkpoints
    assert sheet.filled() == len(sheet.columns)
    if at_start:
        # e0000-s00000001 is the checkpoint of step 1 (a save inside the first epoch), not the base column.
        base, first = (run.samples_dir / n / "p00-s0001.png" for n in ("e0000-s00000000", checkpoints[0]))
        assert pixel_distance(base, first) > 0.5
