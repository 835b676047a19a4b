"""`tunelab resume RUN --set …`: train a finished run further, give a budget-stopped run more time, and
refuse what would break exact resume — on the tiny model, in-process and as a user types it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib

import pytest

from engine import atomic
from engine.config import load_run_config
from engine.launch import LaunchError
from engine.resume import ResumeInputError, plan_resume, resume_with_changes, write_changed_config
from engine.schema import ConfigError
from engine.train.loop import train
from tests.train_fixtures import events, make_project, make_run, tiny_config

pytestmark = pytest.mark.timeout(300)


def cosine(**changes):
    cfg = tiny_config(**{"train.scheduler": "cosine", "train.learning_rate": 1e-3, **changes})
    cfg.sample.at_start = False
    return cfg


def finished_run(tmp_path, cfg, run_id="20260101-000000-test"):
    """A run trained to its end in-process, with the status the supervisor would have written."""
    run = make_run(make_project(tmp_path, goals=False), cfg, run_id)
    assert train(run.path) == 0
    atomic.write_json(run.status_path, {"state": "finished", "attempt": 1, "run_id": run.run_id})
    return run


def as_supervisor_would(run, attempt):
    atomic.write_json(run.status_path, {"state": "starting", "attempt": attempt, "run_id": run.run_id})


def lrs(run, after_step=0):
    return {e["step"]: e["lr"] for e in events(run, "progress") if e["step"] > after_step}


def test_a_finished_cosine_run_trains_on_to_the_new_epochs_on_the_new_curve(tmp_path):
    run = finished_run(tmp_path, cosine(**{"train.epochs": 2}))  # 4 images, batch 2: 2 steps per epoch
    assert [e["step"] for e in events(run, "finished")] == [4]

    plan = plan_resume(run, ["train.epochs=4"])
    assert plan.changes == [("train.epochs", 2, 4)] and (plan.total_steps_before, plan.total_steps) == (4, 8)
    write_changed_config(plan)
    assert load_run_config(run.path / "config.attempt-1.toml").train.epochs == 2
    text = (run.config_path).read_text()
    assert "# Resumed with changes for attempt 2 (attempt 1's config: config.attempt-1.toml): train.epochs: 2 → 4" in text
    assert tomllib.loads(text)["train"]["epochs"] == 4

    as_supervisor_would(run, 2)
    assert train(run.path, resume=True) == 0
    (resumed,) = events(run, "resumed")
    assert resumed["config_changes"] == [{"key": "train.epochs", "before": 2, "after": 4}]
    assert resumed["total_steps_before"] == 4 and resumed["total_steps"] == 8
    assert resumed["lr_before"] < 1e-6 < resumed["lr_now"]  # cosine at its end, then mid-way of the longer curve
    assert "recomputed: the cosine schedule now spans 8 steps" in resumed["lr_schedule"]
    assert [e["step"] for e in events(run, "finished")] == [4, 8]
    assert [c.step for c in run.checkpoints(complete_only=True)][-1] == 8

    # The rate of steps 5-8 is what a run planned for 8 steps from the start uses there.
    planned = make_run(make_project(tmp_path / "ref", goals=False), cosine(**{"train.epochs": 4}))
    assert train(planned.path) == 0
    assert lrs(run, after_step=4) == pytest.approx(lrs(planned, after_step=4), rel=1e-9)
    assert lrs(run, after_step=4)[5] > 1e-4


def test_a_finished_run_without_a_later_target_is_refused_saying_how(tmp_path):
    from engine.config import SamplePrompt

    run = finished_run(tmp_path, cosine(**{"train.epochs": 2, "sample.prompts": [SamplePrompt(text="a red circle")]}))
    with pytest.raises(LaunchError, match=r"already finished at checkpoint e0002-s00000004 \(epoch 2, step 4\); "
                                          r"to train it further, resume it with a later target: "
                                          r"tunelab resume 20260101-000000-test --set train.epochs=4"):
        resume_with_changes(run)
    with pytest.raises(LaunchError, match="already finished"):
        plan_resume(run, ["budget.max_hours=2"])
    with pytest.raises(ResumeInputError, match=r"train.epochs = 2, train.max_steps = 0: that is 4 steps in all "
                                               r"\(2 per epoch\), not beyond checkpoint e0002-s00000004 .*give "
                                               r"train.epochs above 2"):
        plan_resume(run, ["train.epochs=2", "budget.max_hours=1"])
    with pytest.raises(ResumeInputError, match=r"give train.max_steps above 4 \(or 0: no limit\)"):
        plan_resume(run, ["train.epochs=9", "train.max_steps=3"])
    with pytest.raises(ResumeInputError, match=r"--set model.base, train.learning_rate: cannot change on resume .*"
                                               r"resume can change: train.epochs, train.max_steps, budget\.\*, "
                                               r"save\.\*, sample\.\*"):
        plan_resume(run, ["model.base=other", "train.learning_rate=1", "train.epochs=3"])
    with pytest.raises(ResumeInputError, match=r"--set train.epoch: no such run-config key \(did you mean "
                                               r"train.epochs\?\); resume can change: train.epochs"):
        plan_resume(run, ["train.epoch=3"])
    with pytest.raises(ConfigError, match=r"train.epochs = 0: must be between 1 and 100000"):
        plan_resume(run, ["train.epochs=0"])
    with pytest.raises(ResumeInputError, match=r"may only be extended on resume .*start the list with the "
                                               r"current 1: \['a red circle'\]"):
        plan_resume(run, ["train.epochs=4", 'sample.prompts=["something else"]'])
    appended = plan_resume(run, ["train.epochs=4", 'sample.prompts=["a red circle", "a blue square"]'])
    assert [k for k, _, _ in appended.changes] == ["sample.prompts", "train.epochs"]
    assert not (run.path / "config.attempt-1.toml").exists()
    assert tomllib.loads(run.config_path.read_text())["train"]["epochs"] == 2  # nothing changed


def test_a_max_steps_run_resumed_with_more_steps_finishes_the_epoch_it_was_cut_in(tmp_path):
    run = finished_run(tmp_path, cosine(**{"train.epochs": 3, "train.max_steps": 3}))  # cut in epoch 2
    write_changed_config(plan_resume(run, ["train.max_steps=0"]))
    as_supervisor_would(run, 2)
    assert train(run.path, resume=True) == 0
    assert [(e["epoch"], e["step"]) for e in events(run, "epoch")] == [(1, 2), (2, 4), (3, 6)]
    assert [e["step"] for e in events(run, "progress")] == [1, 2, 3, 4, 5, 6]


def test_resume_set_from_the_command_line_gives_a_budget_stopped_run_more_time(tmp_path):
    cfg = cosine(**{"train.epochs": 3, "budget.max_hours": 1e-9})  # stops after its first step
    run = make_run(make_project(tmp_path / "projects", goals=False), cfg, "20260101-000000-budget")
    assert train(run.path) == 0
    assert events(run, "stopped")[0]["reason"] == "budget"
    atomic.write_json(run.status_path, {"state": "stopped", "attempt": 1, "run_id": run.run_id})
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUNELAB_")}
    env.update(TUNELAB_NO_ACCELERATE="1", TUNELAB_CACHE=os.environ["TUNELAB_CACHE"])

    def tunelab(*args):
        return subprocess.run([sys.executable, "-m", "tui.cli", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=240)

    refused = tunelab("resume", str(run.path), "--set", "data.resolution=64")
    assert refused.returncode == 2 and "--set data.resolution: cannot change on resume" in refused.stderr
    done = tunelab("resume", str(run.path), "--set", "budget.max_hours=0", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "changed: budget.max_hours: 1e-09 → 0.0" in done.stdout
    assert run.read_status()["state"] == "finished" and run.read_status()["attempt"] == 2
    assert [e["step"] for e in events(run, "finished")] == [6]
    (resumed,) = events(run, "resumed")
    assert resumed["config_changes"] == [{"key": "budget.max_hours", "before": 1e-9, "after": 0.0}]
    assert "lr_schedule" not in resumed  # the length did not change
    assert load_run_config(run.path / "config.attempt-1.toml").budget.max_hours == 1e-9
    assert json.loads(json.dumps(run.read_status()))["history"][0]["state"] == "stopped"
    log = (run.path / "train.log").read_text()
    assert "resumed with changes: budget.max_hours: 1e-09 → 0.0" in log


def test_a_pivotal_run_extended_after_its_switch_stays_in_the_lora_phase(tmp_path):
    cfg = tiny_config(**{"method": "pivotal", "train.epochs": 2, "pivotal.ti_fraction": 0.5,
                         "textual_inversion.initializer_token": "circle", "train.learning_rate": 1e-2})
    cfg.sample.at_start = False
    run = finished_run(tmp_path, cfg)  # 4 steps: textual inversion for 2, LoRA for 2
    write_changed_config(plan_resume(run, ["train.epochs=6"]))  # 12 steps: a fresh plan would switch at 6
    as_supervisor_would(run, 2)
    assert train(run.path, resume=True) == 0
    phases = [(p["phase"], p["step"], p.get("resumed_at")) for p in events(run, "phase")]
    assert phases == [("textual_inversion", 0, None), ("lora", 2, None), ("lora", 2, 4)]
    assert [e["step"] for e in events(run, "finished")] == [4, 12]


def test_the_runs_tab_asks_for_more_epochs_before_resuming_a_finished_run(tmp_path, monkeypatch):
    from textual.widgets import DataTable, Input

    from engine import launch
    from tests.fake_trainer import FAST_ENV, kill_run_processes, make_project as fake_project, wait_state
    from tests.test_tui_runs import PaneApp, sync, table_state, until

    for k, v in {**FAST_ENV, "TUNELAB_NO_GPU": "1", "TUNELAB_FAKE_STEPS_PER_EPOCH": "2"}.items():
        monkeypatch.setenv(k, v)
    project = fake_project(tmp_path, "[train]\nepochs = 2\n")
    rd = launch.create_run(project, "x")
    try:
        launch.start_supervisor(rd)
        assert wait_state(rd, {"finished", "failed"}) == "finished"

        @sync
        async def body():
            app = PaneApp(project)
            async with app.run_test(size=(160, 24)) as pilot:
                await until(pilot, lambda: table_state(app).get(rd.run_id) == "finished", what="finished")
                app.query_one(DataTable).focus()
                await pilot.press("r")
                await until(pilot, lambda: type(app.screen).__name__ == "ResumeChangesScreen", what="the dialog")
                assert app.screen.query_one("#resume-epochs", Input).value == "4"
                texts = [str(w.render()) for w in app.screen.query("Static")]
                assert "It finished its 2 epochs. Train it on to more:" in texts
                labels = [w for w in app.screen.query("Label") if "budget" in str(w.render())]
                assert [str(w.render()) for w in labels] == ["budget.max_hours"]
                assert labels[0].content_size.height == 1  # whole on one line (was cut "budget.max_hour / s")
                await pilot.press("enter")
                await until(pilot, lambda: (rd.read_status() or {}).get("attempt") == 2, what="resumed")

        body()
        assert wait_state(rd, {"finished", "failed"}) == "finished"
        assert tomllib.loads(rd.config_path.read_text())["train"]["epochs"] == 4
        assert tomllib.loads((rd.path / "config.attempt-1.toml").read_text())["train"]["epochs"] == 2
        assert [e["step"] for e in events(rd, "finished")] == [4, 8]
    finally:
        kill_run_processes(rd)


def test_list_and_table_values_changed_on_resume_write_a_config_the_trainer_reads_back(tmp_path):
    from engine.config import SamplePrompt

    cfg = cosine(**{"train.epochs": 2, "save.epochs": [1, 2], "sample.prompts": [SamplePrompt(text="a red circle")]})
    run = finished_run(tmp_path, cfg)
    plan = plan_resume(run, ["train.epochs=3", "save.epochs=[1, 2, 3]",
                             'sample.prompts=[{text = "a red circle"}, {text = "a blue square", seeds = [7]}]'])
    write_changed_config(plan)
    again = load_run_config(run.config_path)  # what the resumed trainer reads first
    assert again == plan.cfg and again.save.epochs == [1, 2, 3] and again.sample.prompts[1].seeds == [7]
    header = [line for line in run.config_path.read_text().splitlines() if not line.startswith("#")][0]
    assert header.startswith("method = "), "every line of the change note is a comment"
    note = next(line for line in run.config_path.read_text().splitlines() if "Resumed with changes" in line)
    assert "save.epochs: [1, 2] → [1, 2, 3]" in note
