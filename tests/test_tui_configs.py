"""The Configs tab: validation shown at the key, new configs from templates, editing in $EDITOR."""
from __future__ import annotations

import sys

import pytest

from engine.config import load_run_config
from tests.test_tui_support import make_project, sync, wait_for
from tui.app import make_app
from tui.widgets.configs_pane import editor_command, render_config, validate_config


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return make_project(tmp_path / "projects")


async def open_configs(pilot, app):
    await wait_for(pilot, lambda: type(app.screen).__name__ == "HomeScreen" and app.screen.summaries)
    await pilot.press("enter")
    await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
    await pilot.press("2")
    pane = app.screen.query_one("ConfigsPane")
    await wait_for(pilot, lambda: bool(pane.statuses))
    return pane


def test_problems_are_printed_under_their_line(project):
    status = validate_config(project / "configs/bad.toml", project)
    text = render_config(status).plain.splitlines()
    i = next(n for n, line in enumerate(text) if "learning_rate = -1" in line and "│" in line)
    assert text[i + 1].strip() == "└ configs/bad.toml:4: train.learning_rate = -1: must be > 0"
    assert any("configs/bad.toml:6: train.epoch: unknown key; did you mean 'epochs'?" in line for line in text)
    assert validate_config(project / "configs/lora.toml", project).ok


@sync
async def test_configs_tab_lists_and_validates_every_config(project):
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_configs(pilot, app)
        assert [(s.path.name, s.ok) for s in pane.statuses] == [("bad.toml", False), ("lora.toml", True)]
        view = str(pane.query_one("#config-view").render())
        assert "train.learning_rate = -1: must be > 0" in view
        await pilot.press("down")
        assert "valid (lora)" in str(pane.query_one("#config-view").render())


@sync
async def test_new_config_from_a_methods_template(project):
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_configs(pilot, app)
        await pilot.press("n")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "NewConfigScreen")
        app.screen.query_one("#new-config-method").value = "full"
        await pilot.pause()
        assert app.screen.query_one("#new-config-name").value == "full"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: any(s.path.name == "full.toml" for s in pane.statuses))
        cfg = load_run_config(project / "configs/full.toml")
        assert cfg.method == "full" and cfg.train.ema and cfg.train.learning_rate == 1e-5
        assert cfg.model.base == "tiny"  # the project's base, not the schema's SD 1.5 (not on this machine)
        assert pane.selected.path.name == "full.toml" and pane.selected.ok


@sync
async def test_edit_runs_the_editor_with_the_app_suspended(project, monkeypatch):
    calls = []
    monkeypatch.setenv("EDITOR", f"{sys.executable} -c pass")

    def fake_call(cmd, *a, **k):
        calls.append(cmd)
        (project / "configs/bad.toml").write_text('method = "lora"\n[model]\nbase = "tiny"\n')
        return 0

    import contextlib

    import tui.widgets.configs_pane as module

    monkeypatch.setattr(module.subprocess, "call", fake_call)
    app = make_app(project.parent, images="none", watch=False, animations=False)
    monkeypatch.setattr(type(app), "suspend", lambda self: contextlib.nullcontext())
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_configs(pilot, app)
        await pilot.press("e")
        await wait_for(pilot, lambda: bool(calls) and pane.statuses and pane.statuses[0].ok)
        assert calls[0][:2] == [sys.executable, "-c"] and calls[0][-1].endswith("bad.toml")


def test_editor_command_never_needs_a_shell(monkeypatch, tmp_path):
    monkeypatch.setenv("VISUAL", "code --wait")
    assert editor_command(tmp_path / "a b.toml") == ["code", "--wait", str(tmp_path / "a b.toml")]


def test_every_problem_is_listed_at_the_top_too(project):
    status = validate_config(project / "configs/bad.toml", project)
    head = render_config(status).plain.split("\n\n", 1)[0].splitlines()
    assert head == ["✗ configs/bad.toml: 2 problem(s)",
                    "  line 4: train.learning_rate = -1: must be > 0",
                    "  line 6: train.epoch: unknown key; did you mean 'epochs'?"]


@sync
async def test_a_new_dreambooth_config_asks_for_its_prompts_and_is_valid(project):
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_configs(pilot, app)
        await pilot.press("n")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "NewConfigScreen")
        dialog = app.screen
        assert not dialog.query_one("#new-config-class-row").display  # lora: no prompts asked
        dialog.query_one("#new-config-method").value = "dreambooth"
        await pilot.pause()
        assert dialog.query_one("#new-config-class-row").display
        await pilot.press("ctrl+s")  # without the class prompt: refused, and said why
        await pilot.pause()
        assert type(app.screen).__name__ == "NewConfigScreen"
        assert "class prompt: required" in str(dialog.query_one("#new-config-error").render())
        assert not (project / "configs/dreambooth.toml").exists()
        dialog.query_one("#new-config-instance").value = "a photo of sks dog"
        dialog.query_one("#new-config-class").value = "a photo of a dog"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: any(s.path.name == "dreambooth.toml" for s in pane.statuses))
        assert pane.selected.path.name == "dreambooth.toml" and pane.selected.ok
        cfg = load_run_config(project / "configs/dreambooth.toml")
        assert (cfg.dreambooth.instance_prompt, cfg.dreambooth.class_prompt) == ("a photo of sks dog", "a photo of a dog")


def test_a_config_that_tunelab_run_refuses_is_not_marked_valid(project, tiny_base):
    configs = project / "configs"
    (configs / "ti.toml").write_text('method = "textual_inversion"\n[model]\nbase = "tiny"\n'
                                     '[textual_inversion]\nplaceholder_token = "circle"\ninitializer_token = "circle"\n')
    (configs / "nobase.toml").write_text('method = "lora"\n[model]\nbase = "models/gone"\n')
    (configs / "noacc.toml").write_text('method = "lora"\n[launch]\naccelerate_config = "ds.yaml"\n'
                                        '[model]\nbase = "tiny"\n')

    ti = validate_config(configs / "ti.toml", project)
    assert not ti.ok
    assert [str(p) for p in ti.problems] == [
        "configs/ti.toml:5: textual_inversion.placeholder_token = 'circle': 'circle' is already a token of the "
        "base model's tokenizer; pick a new word, e.g. \"<my-subject>\""]
    text = render_config(ti).plain.splitlines()
    i = next(n for n, line in enumerate(text) if 'placeholder_token = "circle"' in line and "│" in line)
    assert text[i + 1].strip().startswith("└ configs/ti.toml:5: textual_inversion.placeholder_token")

    nobase = validate_config(configs / "nobase.toml", project)
    assert not nobase.ok and nobase.problems[0].line == 3 and "models/gone" in nobase.problems[0].message
    noacc = validate_config(configs / "noacc.toml", project)
    assert [p.key for p in noacc.problems] == ["launch.accelerate_config"] and noacc.problems[0].line == 3
    assert "ds.yaml is not a file" in noacc.problems[0].message

    # The same words as `tunelab run`, which refuses each of them.
    from tui.cli import main

    for name in ("ti", "nobase", "noacc"):
        assert main(["run", str(project), name]) == 2
    (project / "ds.yaml").write_text("compute_environment: LOCAL_MACHINE\n")
    assert validate_config(configs / "noacc.toml", project).ok


@sync
async def test_the_configs_list_marks_a_launch_refusal_with_a_cross(project):
    (project / "configs" / "nobase.toml").write_text('method = "lora"\n[model]\nbase = "models/gone"\n')
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_configs(pilot, app)
        assert [(s.path.name, s.ok) for s in pane.statuses] == [
            ("bad.toml", False), ("lora.toml", True), ("nobase.toml", False)]
        await pilot.press("down", "down")
        view = str(pane.query_one("#config-view").render())
        assert "nobase.toml: 1 problem(s)" in view and "models/gone" in view


NOACC = 'method = "lora"\n[launch]\naccelerate_config = "ds.yaml"\n[model]\nbase = "tiny"\n'


def marks(pane) -> list[str]:
    """The list's rows as the user reads them (✓/✗, name, problem count)."""
    listing = pane.query_one("#configs-list")
    return [str(listing.get_option_at_index(i).prompt) for i in range(listing.option_count)]


@sync
async def test_a_cross_clears_while_the_tab_is_shown_once_its_cause_outside_configs_is_gone(project, monkeypatch):
    # No file watcher, and ds.yaml is not in configs/ anyway: only the timer can notice it.
    from tui.widgets.configs_pane import ConfigsPane

    monkeypatch.setattr(ConfigsPane, "REVALIDATE_S", 0.2)
    (project / "configs" / "noacc.toml").write_text(NOACC)
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_configs(pilot, app)
        assert marks(pane)[2] == "✗ noacc.toml (1)"
        (project / "ds.yaml").write_text("compute_environment: LOCAL_MACHINE\n")
        await wait_for(pilot, lambda: marks(pane)[2] == "✓ noacc.toml")
        assert pane.statuses[2].ok


@sync
async def test_showing_the_configs_tab_validates_again(project, monkeypatch):
    from tui.widgets.configs_pane import ConfigsPane

    monkeypatch.setattr(ConfigsPane, "REVALIDATE_S", 3600.0)  # the timer stays out of it
    (project / "configs" / "noacc.toml").write_text(NOACC)
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_configs(pilot, app)
        assert marks(pane)[2] == "✗ noacc.toml (1)"
        await pilot.press("1")
        (project / "ds.yaml").write_text("compute_environment: LOCAL_MACHINE\n")
        await pilot.pause(0.3)
        assert marks(pane)[2] == "✗ noacc.toml (1)"  # hidden: not checked
        await pilot.press("2")
        await wait_for(pilot, lambda: marks(pane)[2] == "✓ noacc.toml")


@sync
async def test_the_timer_checks_only_a_visible_tab_and_keeps_the_view_where_it_was(project, monkeypatch):
    import tui.widgets.configs_pane as module

    monkeypatch.setattr(module.ConfigsPane, "REVALIDATE_S", 0.1)
    checked = []
    real = module.validate_config
    monkeypatch.setattr(module, "validate_config", lambda path, project_dir: checked.append(path.name) or real(path, project_dir))
    long = 'method = "lora"\n' + "".join(f"# note {i}\n" for i in range(80)) + '[model]\nbase = "tiny"\n'
    (project / "configs" / "bad.toml").write_text(long)
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HomeScreen" and app.screen.summaries)
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen" and len(checked) == 2)
        await pilot.pause(0.5)  # Dataset tab shown: five ticks, no check
        assert len(checked) == 2
        await pilot.press("2")
        pane = app.screen.query_one("ConfigsPane")
        await wait_for(pilot, lambda: len(checked) >= 6)  # shown, then ticks
        scroll = pane.query_one("#config-scroll")
        scroll.scroll_to(y=40, animate=False)
        await pilot.pause()
        before = len(checked)
        await wait_for(pilot, lambda: len(checked) >= before + 6)
        await pilot.pause()
        assert scroll.scroll_y == 40  # the checks did not move the view


def test_check_warnings_are_shown_as_warnings_under_their_line_and_the_config_stays_valid(project):
    configs = project / "configs"
    (configs / "typo.toml").write_text('method = "lora"\n[model]\nbase = "tiny"\n'
                                       '[lora]\ntarget_modules = ["to_q", "to_vv"]\n')
    status = validate_config(configs / "typo.toml", project)
    assert status.ok and not status.problems  # it launches: a warning, not a ✗
    text = render_config(status).plain.splitlines()
    assert text[0].startswith("✓ configs/typo.toml: valid (lora)")
    assert text[1] == "⚠ 1 warning(s): it launches, but this is likely a mistake"
    assert text[2].startswith("  line 5: lora.target_modules: 'to_vv' matches no module")
    i = next(n for n, line in enumerate(text) if 'target_modules = ["to_q", "to_vv"]' in line and "│" in line)
    assert text[i + 1].strip().startswith("└ ⚠ configs/typo.toml:5: lora.target_modules: 'to_vv' matches no module")
    assert "did you mean 'to_v'?" in "".join(text[i + 1:])
    assert not any(line.startswith("✗") for line in text)

    # The placeholder no sample prompt says (tunelab check's other config warning), at sample.prompts.
    (configs / "ti.toml").write_text('method = "textual_inversion"\n[model]\nbase = "tiny"\n'
                                     '[textual_inversion]\nplaceholder_token = "<sks>"\n'
                                     '[sample]\nprompts = ["a photo of a dog"]\n')
    ti = validate_config(configs / "ti.toml", project)
    assert [(w.line, w.message.split(",")[0]) for w in ti.warnings] == [
        (7, "no sample prompt says textual_inversion.placeholder_token '<sks>'")]


@sync
async def test_the_configs_list_marks_a_config_with_warnings_apart_from_one_with_errors(project):
    (project / "configs" / "typo.toml").write_text('method = "lora"\n[model]\nbase = "tiny"\n'
                                                   '[lora]\ntarget_modules = ["to_q", "to_vv"]\n')
    app = make_app(project.parent, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 40)) as pilot:
        pane = await open_configs(pilot, app)
        assert marks(pane) == ["✗ bad.toml (2)", "✓ lora.toml", "✓ typo.toml ⚠1"]
        await pilot.press("down", "down")
        view = str(pane.query_one("#config-view").render())
        assert "valid (lora)" in view and "⚠ 1 warning(s)" in view and "'to_vv' matches no module" in view
