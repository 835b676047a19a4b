"""`tunelab new`: a project that checks out of the box, refusing to clobber anything."""
from __future__ import annotations

from engine.config import default_config, load_run_config
from engine.project import load_project_file, scan_project
from tests.projectkit import tree_digest, write_image
from tui.cli import main


def new(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["new", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


def test_a_bare_name_creates_a_project_under_projects_with_a_valid_project_file_and_lora_config(tmp_path, capsys,
                                                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = new(capsys, "dogs")
    assert rc == 0, err
    p = tmp_path / "projects" / "dogs"
    pf = load_project_file(p)
    assert pf.name == "dogs" and pf.concepts == [] and pf.goals.as_dict() == {
        "accuracy": [], "flexibility": [], "preservation": []}
    text = (p / "project.toml").read_text()
    assert "# The subject as trained" in text and "# [[concepts]]" in text
    assert load_run_config(p / "configs" / "lora.toml") == default_config("lora")
    config_text = (p / "configs" / "lora.toml").read_text()
    assert "[lora]" in config_text and "[dreambooth]" not in config_text and "[pivotal]" not in config_text
    assert (p / "images").is_dir()


def test_from_copies_images_captions_and_metadata_keeping_subfolders(tmp_path, capsys):
    src = tmp_path / "src"
    write_image(src / "a.png", caption="a dog")
    write_image(src / "more" / "b.JPG", caption="another")
    (src / "metadata.csv").write_text("file_name,name\na.png,rex\n")
    (src / ".DS_Store").write_bytes(b"junk")
    (src / "notes.md").write_text("not data")
    src_before = tree_digest(src)
    rc, out, err = new(capsys, tmp_path / "proj", "--from", src)
    assert rc == 0, err
    assert "copied 2 image(s) and 3 caption/metadata file(s)" in out
    p = tmp_path / "proj"
    assert sorted(x.relative_to(p / "images").as_posix() for x in (p / "images").rglob("*")) == \
        ["a.png", "a.txt", "metadata.csv", "more", "more/b.JPG", "more/b.txt"]
    ds = scan_project(p)
    assert [c.name for c in ds.concepts] == ["images"] and len(ds.usable_items) == 2
    assert tree_digest(src) == src_before


def test_from_says_what_it_skipped_and_why_with_a_count_and_a_few_names(tmp_path, capsys):
    src = tmp_path / "src"
    write_image(src / "a.png", caption="a dog")
    (src / ".DS_Store").write_bytes(b"junk")
    (src / ".git").mkdir()
    (src / ".git" / "HEAD").write_text("ref")
    for name in ("notes.md", "a.psd", "b.psd", "c.npz", "d.json"):
        (src / name).write_text("not data")
    write_image(src / "k" / "b.png", caption="the txt wins")
    (src / "k" / "b.caption").write_text("ignored")
    (src / "elsewhere").mkdir()
    (src / "linked").symlink_to(src / "elsewhere")
    rc, out, err = new(capsys, tmp_path / "proj", "--from", src)
    assert rc == 0, err
    assert "skipped 9 file(s)/folder(s):" in out
    assert "2 hidden: .git/, .DS_Store\n" in out
    assert "5 not images, captions or metadata: a.psd, b.psd, c.npz and 2 more\n" in out
    assert "1 .caption files beside a .txt (the .txt is taken): k/b.caption" in out
    assert "1 folder symlinks (not followed): linked/" in out
    write_image(tmp_path / "plain" / "x.png", caption="x")
    rc, out, _ = new(capsys, tmp_path / "proj2", "--from", tmp_path / "plain")
    assert rc == 0 and "skipped " not in out


def test_from_with_link_symlinks_the_images(tmp_path, capsys):
    src = tmp_path / "src"
    write_image(src / "a.png", caption="a dog")
    rc, _, _ = new(capsys, tmp_path / "proj", "--from", src, "--link")
    img = tmp_path / "proj" / "images" / "a.png"
    assert rc == 0 and img.is_symlink() and img.resolve() == (src / "a.png").resolve()
    assert not (tmp_path / "proj" / "images" / "a.txt").is_symlink()  # captions are copied: editing is safe


def test_new_refuses_dotdot_and_an_existing_non_empty_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = new(capsys, "../escape")
    assert rc == 2 and "'..'" in err and not (tmp_path.parent / "escape").exists()
    (tmp_path / "projects" / "taken").mkdir(parents=True)
    (tmp_path / "projects" / "taken" / "mine.txt").write_text("keep me")
    rc, _, err = new(capsys, "taken")
    assert rc == 1 and "not empty" in err
    assert sorted(x.name for x in (tmp_path / "projects" / "taken").iterdir()) == ["mine.txt"]
    (tmp_path / "projects" / "empty").mkdir()
    assert new(capsys, "empty")[0] == 0


def test_from_a_folder_that_does_not_exist_creates_nothing(tmp_path, capsys):
    rc, _, err = new(capsys, tmp_path / "proj", "--from", tmp_path / "nope")
    assert rc == 2 and "not a folder" in err and not (tmp_path / "proj").exists()


def test_from_another_project_takes_its_images_but_not_its_runs(tmp_path, capsys):
    src = tmp_path / "old"
    write_image(src / "images" / "a.png", caption="a dog")
    write_image(src / "runs" / "r1" / "samples" / "e0001" / "p00-s0042.png")
    rc, out, _ = new(capsys, tmp_path / "proj", "--from", src)
    assert rc == 0 and "copied 1 image(s)" in out
    assert (tmp_path / "proj" / "images" / "images" / "a.png").is_file()
    assert not (tmp_path / "proj" / "images" / "runs").exists()


def test_from_a_kohya_dataset_makes_one_concept_per_folder_with_its_repeats(tmp_path, capsys):
    src = tmp_path / "train"
    write_image(src / "10_sks dog" / "a.png", caption="sks dog on grass")
    write_image(src / "10_sks dog" / "b.png")
    (src / "10_sks dog" / "b.caption").write_text("sks dog, kohya caption file")
    write_image(src / "10_sks dog" / "c.png", caption="the txt wins")
    (src / "10_sks dog" / "c.caption").write_text("ignored")
    write_image(src / "1_dog" / "d.png", caption="a dog")
    write_image(src / "extra" / "e.png", caption="no prefix")
    write_image(src / "loose.png")
    rc, out, err = new(capsys, tmp_path / "proj", "--from", src)
    assert rc == 0, err
    assert "kohya-style folders became concepts with their repeats: sks dog x10, dog x1, extra x1" in out
    assert "1 image(s) directly in" in out
    p = tmp_path / "proj"
    pf = load_project_file(p)
    assert [(c.folder, c.repeats, c.name) for c in pf.concepts] == [
        ("images/10_sks dog", 10, "sks dog"), ("images/1_dog", 1, "dog"), ("images/extra", 1, "extra")]
    assert (p / "images" / "10_sks dog" / "b.txt").read_text() == "sks dog, kohya caption file"
    assert (p / "images" / "10_sks dog" / "c.txt").read_text() == "the txt wins"
    assert not list(p.rglob("*.caption"))
    ds = scan_project(p)
    assert ds.concept("sks dog").effective == 30 and ds.effective_count == 32
    assert "# The subject as trained" in (p / "project.toml").read_text()  # the commented template stays


def test_from_a_plain_folder_of_numbered_files_is_not_mistaken_for_kohya(tmp_path, capsys):
    src = tmp_path / "photos"
    write_image(src / "2024_01.png", caption="x")
    write_image(src / "trip" / "3_beach.png", caption="y")
    rc, out, _ = new(capsys, tmp_path / "proj", "--from", src)
    assert rc == 0 and "kohya" not in out
    assert load_project_file(tmp_path / "proj").concepts == []
