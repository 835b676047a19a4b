"""What a newcomer reads on the command line: `tunelab --help`, each command's `--help`, its errors, `--wait` lines."""
from __future__ import annotations

import pytest

from tui import cli


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_each_commands_help_starts_with_its_own_usage_line(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: tunelab {command} [-h]"), out[:200]
    assert "[--images MODE]" not in out  # not the TUI's usage in front of it


def test_an_argument_error_names_the_command_not_the_tui_usage(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["run"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "tunelab run: error: the following arguments are required: project, config" in err
    assert "[--images MODE]" not in err


def test_force_stop_waits_as_long_before_sigkill_from_the_cli_as_from_the_tui(capsys):
    import inspect
    import re

    from engine import launch
    from tui import actions

    with pytest.raises(SystemExit):
        cli.main(["stop", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    cli_default = re.search(r"SIGTERM and SIGKILL \(default ([\d.]+)\)", help_text).group(1)
    tui_k = re.search(r"SIGKILL ([\d.]+) s later", actions.BY_ID["runs.force_stop"].label).group(1)
    engine_default = inspect.signature(launch.stop_run).parameters["kill_after"].default
    # was: K waited 5 s, `tunelab stop --force` 10 s
    assert float(cli_default) == float(tui_k) == engine_default == launch.FORCE_KILL_AFTER_S, help_text


def test_resume_help_says_which_columns_new_prompts_are_rendered_for(capsys):
    with pytest.raises(SystemExit):
        cli.main(["resume", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    # was: "…every earlier checkpoint the run still has (with its state/) and for the base column", which
    # a run launched with no prompts (no columns) or with sample.at_start = false (no base column) belied
    assert "also where it has no sample column yet: a run launched with no prompts" in text
    assert "for the base column (epoch 0) unless sample.at_start = false" in text


def test_run_wait_names_the_first_step_of_a_pivotal_phase_as_train_log_does():
    from tui.commands.run import describe_event

    # 24 steps, ti_fraction 0.5: the embedding trains steps 1-12, the LoRA from step 13
    assert describe_event({"kind": "phase", "phase": "textual_inversion", "step": 0, "until_step": 12}) == \
        "phase textual_inversion from step 1"
    assert describe_event({"kind": "phase", "phase": "lora", "step": 12}) == "phase lora from step 13"


def test_grid_of_a_run_without_samples_says_why_and_writes_nothing(tmp_path, capsys):
    from engine.rundir import RunDir

    run = RunDir(tmp_path / "projects" / "p" / "runs" / "20260101-000000-lora")
    run.samples_dir.mkdir(parents=True)
    (run.path / "config.toml").write_text('method = "lora"\n[sample]\nprompts = []\n')
    out = tmp_path / "sheet.png"
    assert cli.main(["grid", str(run.path), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "has no sample images: its config has no sample.prompts and the project had no goals" in err
    assert "tunelab resume 20260101-000000-lora --set 'sample.prompts=[" in err
    assert not out.exists()  # was: an empty sheet, 'seed None', exit 0

    (run.path / "config.toml").write_text('method = "lora"\n[sample]\nprompts = ["a red circle"]\n')
    assert cli.main(["grid", str(run.path), "-o", str(out)]) == 1
    assert "none rendered yet" in capsys.readouterr().err and not out.exists()


def test_caption_auto_with_a_model_path_that_does_not_exist_says_so(tmp_path, capsys):
    from tests.projectkit import write_image

    write_image(tmp_path / "p" / "images" / "a.png")  # no caption: auto has work to do
    missing = tmp_path / "models" / "blip-base"
    assert cli.main(["caption", str(tmp_path / "p"), "auto", "--model", str(missing)]) == 1
    err = capsys.readouterr().err
    assert f"cannot load BLIP from --model {missing}: no such folder" in err
    assert "Repo id must be in the form" not in err and "as a hub id" not in err
    assert not (tmp_path / "p" / "images" / "a.txt").exists()
