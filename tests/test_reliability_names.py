"""Hostile names: `..`, absolute paths and shell metacharacters as project names, config names, run ids and
concept folders are refused or taken literally, and nothing is ever written outside the project."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.project import load_project_file, scan_project
from engine.rundir import RunDir, list_runs
from engine.schema import ConfigError
from tests.fake_trainer import FAST_ENV, kill_run_processes, make_project, wait_state
from tests.projectkit import write_image
from tui.cli import main as tunelab

pytestmark = pytest.mark.timeout(120)

SHELLY = ["; rm -rf x", "$(touch pwned)", "`touch pwned`", "name with spaces", "it's \"quoted\"", "a|b&c>d", "*"]


def listing(root: Path, skip: Path | None = None) -> dict[str, int]:
    """Every path under root (except `skip`) with its mtime: any write outside shows up as a difference."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if skip is not None and (d == skip or skip in d.parents):
            dirnames[:] = []
            continue
        for name in dirnames + filenames:
            p = d / name
            if skip is not None and p == skip:
                continue
            out[str(p.relative_to(root))] = p.lstat().st_mtime_ns
    return out


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """cwd = tmp_path/work holding projects/p; tmp_path itself is the 'outside' whose listing must not change."""
    for k, v in FAST_ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("TUNELAB_FAKE_STEP_S", "0.01")
    work = tmp_path / "work"
    project = make_project(work / "projects", "[train]\nepochs = 1\n")
    write_image(project / "images" / "a.png", caption="a picture")
    monkeypatch.chdir(work)
    yield work, project
    for rd in list_runs(project):
        kill_run_processes(rd)


def test_project_names_that_escape_are_refused_and_odd_ones_are_taken_literally(sandbox, tmp_path, capsys):
    work, _ = sandbox
    before = listing(tmp_path, skip=work)
    for name in ["..", "../evil", "../../evil", "a/../../evil", "projects/../../evil"]:
        assert tunelab(["new", name]) == 2, name
        assert "'..' is not allowed" in capsys.readouterr().err
    for name in SHELLY:
        projects_before = set(os.listdir(work / "projects"))
        assert tunelab(["new", name]) == 0, (name, capsys.readouterr().err)
        created = set(os.listdir(work / "projects")) - projects_before
        assert created == {name}, (name, created)  # one folder, named exactly as typed
        assert (work / "projects" / name / "project.toml").is_file()
        assert load_project_file(work / "projects" / name).name == name
    # An absolute path is a path: the project goes exactly there, and nowhere else.
    target = tmp_path / "elsewhere" / "abs project"
    assert tunelab(["new", str(target)]) == 0
    assert sorted(p.name for p in target.iterdir()) == ["configs", "images", "project.toml"]
    after = listing(tmp_path, skip=work)
    assert set(after) - set(before) == {"elsewhere", "elsewhere/abs project", "elsewhere/abs project/configs",
                                        "elsewhere/abs project/images", "elsewhere/abs project/project.toml",
                                        "elsewhere/abs project/configs/lora.toml"}
    assert not list(tmp_path.rglob("pwned")) and not (work / "x").exists()


def test_config_names_with_dots_and_metacharacters_are_not_found_or_used_literally(sandbox, tmp_path, capsys):
    work, project = sandbox
    (work / "x.toml").write_text("[train]\nepochs = 1\n")  # what '../x' would reach from configs/
    before = listing(tmp_path, skip=project)
    for config in ["../x", "../../x", "/etc/passwd", *SHELLY]:
        assert tunelab(["run", "p", config]) == 2, config
        capsys.readouterr()
    assert not (project / "runs").exists() or not any((project / "runs").iterdir())
    # A config file whose name holds every metacharacter runs, and its run lands inside the project.
    odd = "a b;$(touch pwned)'q\""
    (project / "configs" / f"{odd}.toml").write_text('[train]\nepochs = 1\n[model]\nbase = "tiny"\n')
    assert tunelab(["run", "p", odd]) == 0, capsys.readouterr().err
    (run,) = list_runs(project)
    assert run.path.parent == project / "runs" and run.run_id.endswith("-a_b_touch_pwned_q")
    assert wait_state(run, {"finished", "failed"}) == "finished"
    assert listing(tmp_path, skip=project) == before
    assert not list(tmp_path.rglob("pwned"))


@pytest.mark.parametrize("command", ["stop", "resume", "status"])
def test_run_ids_that_point_outside_the_runs_folder_are_refused(sandbox, tmp_path, capsys, command):
    work, project = sandbox
    from engine import launch

    run = launch.create_run(project, "x")  # a real run folder, so projects/p/runs/ exists
    run.write_status({"state": "stopped", "started_t": 1.0, "ended_t": 2.0})
    before = listing(tmp_path)
    for run_id in ["..", ".", "../..", "../../etc", "/etc", "runs/..", "$(touch pwned)", "; rm -rf x", "*"]:
        code = tunelab([command, run_id])
        out = capsys.readouterr()
        if command == "status":
            assert code in (0, 2), (run_id, out)  # `status PROJECT|RUN` reads any folder it is pointed at
            assert run.run_id not in out.out or run_id in ("*",), (run_id, out.out)
        else:
            assert code == 2, (command, run_id, out.out, out.err)
    assert listing(tmp_path) == before, "a command wrote something"


def test_concept_folders_that_escape_the_project_are_refused(sandbox, tmp_path):
    work, project = sandbox
    for folder in ["../outside", "/etc", "images/../../outside", "..", "C:\\\\Windows"]:
        (project / "project.toml").write_text(f"[[concepts]]\nfolder = {folder!r}\n".replace("'", '"'))
        with pytest.raises(ConfigError, match="concepts.0.folder"):
            load_project_file(project)
    (project / "project.toml").write_text('[[concepts]]\nfolder = "images"\nmetadata = "../../meta.csv"\n')
    with pytest.raises(ConfigError, match="concepts.0.metadata"):
        load_project_file(project)
    # Metacharacters in a folder name are just characters.
    odd = project / "a; rm -rf b $(touch pwned)"
    write_image(odd / "x.png", caption="odd folder")
    (project / "project.toml").write_text(
        '[[concepts]]\nfolder = "a; rm -rf b $(touch pwned)"\n[[concepts]]\nfolder = "`touch pwned2`"\n')
    before = listing(tmp_path, skip=project)
    ds = scan_project(project)
    assert [i.rel for i in ds.items] == ["a; rm -rf b $(touch pwned)/x.png"]
    assert [str(p) for p in ds.problems] == ["`touch pwned2`: concept folder not found"]
    assert listing(tmp_path, skip=project) == before
    assert not list(tmp_path.rglob("pwned*"))


def test_the_tuis_new_project_and_new_config_dialogs_refuse_names_that_escape(tmp_path):
    """The same names typed into the TUI's dialogs: an error in the dialog, nothing written anywhere."""
    import asyncio

    from tests.test_tui_support import make_project as tui_project
    from tests.test_tui_support import wait_for
    from tui.app import make_app

    projects = tmp_path / "work" / "projects"
    project = tui_project(projects)
    before = listing(tmp_path)

    async def body() -> None:
        app = make_app(projects, images="none", watch=False, animations=False)
        async with app.run_test(size=(140, 40)) as pilot:
            await wait_for(pilot, lambda: type(app.screen).__name__ == "HomeScreen" and app.screen.summaries, 60)
            for name in ["../evil", "/tmp/evil"]:
                await pilot.press("n")
                await wait_for(pilot, lambda: type(app.screen).__name__ == "NewProjectScreen", 60)
                await pilot.press(*name, "enter")
                error = app.screen.query_one("#new-project-error")
                await wait_for(pilot, lambda: str(error.render()).strip(), 60)
                assert "'..' is not allowed" in str(error.render()) or "a name, not a path" in str(error.render())
                await pilot.press("escape")
                await wait_for(pilot, lambda: type(app.screen).__name__ == "HomeScreen", 60)
            await pilot.press("enter")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen", 60)
            await pilot.press("2")
            await wait_for(pilot, lambda: app.focused is not None and app.focused.id == "configs-list", 60)
            for name in ["../../evil", "/tmp/evil", "$(touch pwned)"]:
                await pilot.press("n")
                await wait_for(pilot, lambda: type(app.screen).__name__ == "NewConfigScreen", 60)
                field = app.screen.query_one("#new-config-name")
                field.value = ""
                field.focus()  # the method list has the keys first
                await wait_for(pilot, lambda: app.focused is field, 60)
                await pilot.press(*name, "enter")
                error = app.screen.query_one("#new-config-error")
                await wait_for(pilot, lambda: "use letters, digits" in str(error.render()), 60)
                await pilot.press("escape")
                await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen", 60)

    asyncio.run(body())

    def written(files: dict[str, int]) -> dict[str, int]:  # the project's own scan cache may appear
        return {k: v for k, v in files.items() if "/.cache" not in k and k != "work/projects/pets"}

    assert written(listing(tmp_path)) == written(before), "a dialog wrote something"
    assert not list(tmp_path.rglob("pwned")) and not list(tmp_path.rglob("evil*"))
    assert not Path("/tmp/evil").exists() and not Path("/tmp/evil.toml").exists()
