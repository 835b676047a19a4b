"""project.toml: validated like every config, with every problem at once, and documented from the schema."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.project import load_project_file, reference_markdown
from engine.schema import ConfigError

REPO = Path(__file__).resolve().parent.parent


def load(tmp_path: Path, text: str):
    (tmp_path / "project.toml").write_text(text, encoding="utf-8")
    return load_project_file(tmp_path)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text)
    return [str(p) for p in e.value.problems]


def test_a_full_project_file_loads_into_goals_and_concepts(tmp_path):
    pf = load(tmp_path, """
name = "pokemon"
notes = "833 images"
[goals]
accuracy = ["official art of pokemon pikachu"]
flexibility = ["a pokemon that looks like a teapot"]
preservation = ["a red car"]
[[concepts]]
folder = "images"
repeats = 3
caption = "template"
template = "official art of pokemon {name}, {type1}"
trigger = "pkmn"
""")
    assert pf.name == "pokemon"
    assert pf.goals.as_dict() == {"accuracy": ["official art of pokemon pikachu"],
                                  "flexibility": ["a pokemon that looks like a teapot"],
                                  "preservation": ["a red car"]}
    (c,) = pf.concepts
    assert (c.folder, c.repeats, c.caption, c.trigger, c.label) == ("images", 3, "template", "pkmn", "images")


def test_no_project_file_means_defaults_named_after_the_folder(tmp_path):
    pf = load_project_file(tmp_path)
    assert pf.name == tmp_path.name and pf.concepts == [] and pf.goals.as_dict()["accuracy"] == []


@pytest.mark.parametrize("folder", ["../elsewhere", "images/../../x", "/abs/path", ""])
def test_a_concept_folder_must_stay_inside_the_project(tmp_path, folder):
    (msg,) = problems(tmp_path, f'[[concepts]]\nfolder = "{folder}"\n')
    assert msg.startswith(f"{tmp_path / 'project.toml'}:2: concepts.0.folder")
    assert "inside the project" in msg or "relative" in msg or "empty" in msg


def test_every_problem_of_the_file_is_reported_together_with_lines_and_accepted_values(tmp_path):
    msgs = problems(tmp_path, """name = "x"
nmae = "typo"
[goals]
acuracy = ["a"]
[[concepts]]
folder = "a"
repeats = 0
[[concepts]]
folder = "b"
caption = "sidecars"
[[concepts]]
folder = "c"
caption = "fixed"
""")
    text = "\n".join(msgs)
    assert ":2: nmae: unknown key; did you mean 'name'?" in text
    assert ":4: goals.acuracy: unknown key; did you mean 'accuracy'?" in text
    assert ":7: concepts.0.repeats = 0: must be between 1 and 10000" in text
    assert ":10: concepts.1.caption = 'sidecars': must be one of 'sidecar', 'fixed'" in text
    assert "(did you mean 'sidecar'?)" in text
    assert "concepts.2.text: is required when caption = \"fixed\"" in text
    assert len(msgs) == 5


def test_a_malformed_template_is_reported_at_its_key(tmp_path):
    (msg,) = problems(tmp_path, '[[concepts]]\nfolder = "a"\ncaption = "template"\ntemplate = "pokemon {name"\n')
    assert ":4: concepts.0.template" in msg


def test_invalid_toml_points_at_line_and_column(tmp_path):
    (msg,) = problems(tmp_path, 'name = "x"\n[goals\n')
    assert msg.startswith(f"{tmp_path / 'project.toml'}:2:") and "invalid TOML" in msg


def test_docs_project_md_is_generated_from_the_schema():
    assert (REPO / "docs" / "project.md").read_text() == reference_markdown(), \
        "regenerate: python -m engine.project --docs > docs/project.md"
    out = subprocess.run([sys.executable, "-m", "engine.project", "--docs"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    assert out == reference_markdown()
    assert "every top-level folder holding images" in out
