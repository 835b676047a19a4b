"""Home: projects with their numbers; an empty or missing folder; a new project from the TUI."""
from __future__ import annotations

import json

import pytest

from tests.test_tui_support import make_project, sync, wait_for
from tui.app import make_app
from tui.screens.home import summarise


@pytest.fixture
def projects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_project(tmp_path / "projects", "pets")
    return tmp_path / "projects"


def test_summary_counts_images_captions_and_runs(projects):
    run = projects / "pets" / "runs" / "20260101-000000-lora"
    run.mkdir(parents=True)
    (run / "status.json").write_text(json.dumps({"state": "finished"}))
    s = summarise(projects / "pets")
    assert (s.name, s.images, s.captioned, s.runs) == ("pets", "6", "80%", "1 finished")
    assert s.activity.endswith("UTC")


@sync
async def test_home_lists_projects_and_opens_one(projects):
    app = make_app(projects, images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 30)) as pilot:
        home = app.screen
        await wait_for(pilot, lambda: home.summaries and all(s.images != "…" for s in home.summaries.values()))
        assert [s.row()[:4] for s in home.summaries.values()] == [("pets", "6", "80%", "none")]
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is home)


@sync
@pytest.mark.parametrize("exists", [False, True])
async def test_missing_or_empty_folder_says_so(tmp_path, monkeypatch, exists):
    monkeypatch.chdir(tmp_path)
    if exists:
        (tmp_path / "projects").mkdir()
    app = make_app("projects", images="none", watch=False, animations=False)
    async with app.run_test(size=(100, 24)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one("#home-empty").display)
        text = str(app.screen.query_one("#home-empty").render())
        assert ("has no projects yet" if exists else "does not exist yet") in text and "Press n" in text


@sync
async def test_new_project_is_made_like_tunelab_new(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    app = make_app("projects", images="none", watch=False, animations=False)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one("#home-empty").display)
        await pilot.press("n")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "NewProjectScreen")
        await pilot.press(*"../x", "enter")
        assert "'..' is not allowed" in str(app.screen.query_one("#new-project-error").render()) or \
            "not a path" in str(app.screen.query_one("#new-project-error").render())
        app.screen.query_one("#new-project-name").value = "birds"
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
    p = tmp_path / "projects" / "birds"
    assert (p / "project.toml").is_file() and (p / "configs" / "lora.toml").is_file() and (p / "images").is_dir()


@sync
async def test_new_project_from_a_folder_says_what_it_skipped_as_tunelab_new_does(tmp_path, monkeypatch):
    from tests.projectkit import write_image

    monkeypatch.chdir(tmp_path)
    src = tmp_path / "photos"
    write_image(src / "10_sks dog" / "a.png")
    (src / "10_sks dog" / "a.txt").write_text("a dog")
    (src / ".DS_Store").write_bytes(b"\0")
    (src / "10_sks dog" / "notes [draft].docx").write_bytes(b"x")
    app = make_app("projects", images="none", watch=False, animations=False)
    async with app.run_test(size=(120, 30)) as pilot:
        await wait_for(pilot, lambda: app.screen.query_one("#home-empty").display)
        await pilot.press("n")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "NewProjectScreen")
        app.screen.query_one("#new-project-name").value = "dogs"
        app.screen.query_one("#new-project-from").value = str(src)
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
        notice = next(str(n.message) for n in app._notifications if "created" in str(n.message))
    lines = notice.splitlines()
    assert lines[0] == "created projects/dogs"
    assert lines[1].startswith("copied 1 image(s) and 1 caption/metadata file(s) from ")
    assert "skipped 2 file(s)/folder(s):" in lines
    assert "  1 hidden: .DS_Store" in lines
    assert "  1 not images, captions or metadata: 10_sks dog/notes [draft].docx" in lines  # markup-free
    assert "kohya-style folders became concepts with their repeats: sks dog x10 (see project.toml)" in lines


@sync
async def test_the_notes_take_the_width_the_terminal_leaves_and_enter_open_is_in_the_footer(projects):
    from tests.test_tui_footer import footer_keys

    notes = "Coloured shapes at 64x64 px on plain light backgrounds, captioned"  # 65 characters
    toml = projects / "pets" / "project.toml"
    toml.write_text(toml.read_text().replace('notes = "a small test project"', f'notes = "{notes}"'))
    app = make_app(projects, images="none", watch=False, animations=False)
    async with app.run_test(size=(160, 30)) as pilot:
        home = app.screen
        await wait_for(pilot, lambda: home.summaries and all(s.images != "…" for s in home.summaries.values()))
        await pilot.pause()
        table = home.query_one("#home-projects")
        rows = [table.render_line(y).text for y in range(2)]
        assert rows[1].rstrip().endswith(notes)  # was cut at 40 cells: '…on plain lig'
        assert footer_keys(home)[:2] == ["f1", "⏎"]  # the next step: enter opens the project
        await pilot.resize_terminal(100, 30)  # narrower: the notes keep their 40 cells (scroll sideways)
        await pilot.pause()
        assert table.columns[table.ordered_columns[-1].key].width == 40
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "ProjectScreen")
