"""`tunelab check`: the resolved dataset and config, every problem with its path and reason, and no writes."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.projectkit import image_bytes, png_header_only, tree_digest, write_image
from tui.cli import main

REPO = Path(__file__).resolve().parent.parent


def check(capsys, *argv) -> tuple[int, str, str]:
    rc = main(["check", *map(str, argv)])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def bad_project(tmp_path) -> Path:
    """One of every kind of bad input, next to two good images."""
    p = tmp_path / "bad"
    write_image(p / "imgs" / "good.png", (64, 64), caption="a good image")
    write_image(p / "imgs" / "UPPER.PNG", (64, 64), caption="upper-case png")
    write_image(p / "imgs" / "Photo.JPG", (64, 64), caption="upper-case jpg")
    jpeg = image_bytes((64, 64), "JPEG")
    (p / "imgs" / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    (p / "imgs" / "truncated.txt").write_text("a truncated image")
    (p / "imgs" / "zero.png").write_bytes(b"")
    (p / "imgs" / "notanimage.png").write_bytes(b"this is text, not a PNG")
    (p / "imgs" / "orphan.txt").write_text("my image is gone")
    write_image(p / "imgs" / "latin1.png", (64, 64))
    (p / "imgs" / "latin1.txt").write_bytes("naïve café".encode("latin-1"))
    (p / "imgs" / "huge.png").write_bytes(png_header_only(20000, 20000))
    (p / "imgs" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1" + b"\x00" * 100)
    return p


def test_check_lists_every_bad_input_with_path_and_reason_and_still_counts_the_good_ones(bad_project, capsys):
    before = tree_digest(bad_project)
    rc, out, err = check(capsys, bad_project)
    assert rc == 0, err  # bad images are skipped, not fatal
    assert "imgs/truncated.jpg: unreadable: truncated (no JPEG end marker)" in out
    assert "imgs/zero.png: unreadable: empty file (0 bytes)" in out
    assert "imgs/notanimage.png: unreadable: not an image PIL can open" in out
    assert "imgs/huge.png: unreadable: decompression bomb (20000x20000" in out
    assert "imgs/orphan.txt: caption file with no image next to it" in out
    assert "imgs/latin1.png: caption not UTF-8" in out
    assert ".DS_Store" not in out
    row = next(line for line in out.splitlines() if line.strip().startswith("imgs "))
    assert row.split()[3:5] == ["8", "4"]  # 8 images found, 4 usable (good, UPPER.PNG, Photo.JPG, latin1)
    assert "ok: 4 usable image(s), 5 problem(s) skipped" in out
    assert tree_digest(bad_project) == before


def test_strict_makes_skipped_problems_an_error(bad_project, capsys):
    rc, out, err = check(capsys, bad_project, "--strict")
    assert rc == 1 and "--strict: 5 problem(s)" in err


def test_check_with_no_cache_writes_nothing_at_all(bad_project, capsys):
    before = tree_digest(bad_project, exclude=())
    rc, _, _ = check(capsys, bad_project, "--no-cache")
    assert rc == 0 and tree_digest(bad_project, exclude=()) == before


def project_with_config(tmp_path: Path, config: str) -> Path:
    p = tmp_path / "projects" / "dogs"
    for i in range(10):
        write_image(p / "photos" / f"{i}.png", (64, 64) if i else (32, 32), caption="sks dog")
    (p / "project.toml").write_text('[goals]\naccuracy = ["sks dog"]\n[[concepts]]\nfolder = "photos"\nrepeats = 3\n')
    (p / "configs").mkdir()
    if "[model]" not in config:
        config += '\n[model]\nbase = "tiny"\n'  # the default base (SD 1.5) is not on this machine
    (p / "configs" / "lora.toml").write_text(config)
    return p


def test_check_by_name_under_projects_prints_counts_steps_and_the_resolved_config(tmp_path, capsys, monkeypatch):
    project_with_config(tmp_path, "[data]\nresolution = 64\n[train]\nbatch_size = 4\ngradient_accumulation = 2\n"
                                  "epochs = 5\n[launch]\nnum_processes = 2\n")
    monkeypatch.chdir(tmp_path)
    rc, out, err = check(capsys, "dogs", "lora")
    assert rc == 0, err
    # 10 images x 3 repeats = 30; per process ceil(30 / (4 x 2)) = 4 batches; / accumulation 2 = 2 steps
    assert "steps per epoch: 2  (effective images 30 / batch 4 x accumulation 2 x processes 2);  5 epochs = 10 steps" in out
    assert "photos/0.png: too small (32x32, shorter side < 64)" in out
    assert "resolved config (" in out and "batch_size = 4" in out and "learning_rate = 0.0001" in out
    assert "goals: 1 accuracy, 0 flexibility, 0 preservation" in out
    assert "  [lora]\n" in out and "  [sample]\n" in out and "[dreambooth]" not in out and "[pivotal]" not in out


def test_the_resolved_config_shows_the_sections_its_method_reads(tmp_path, capsys):
    p = project_with_config(tmp_path, 'method = "dreambooth"\n[dreambooth]\nclass_prompt = "a dog"\nweights = "full"\n')
    rc, out, err = check(capsys, p, "lora", "--set", "train.epochs=2")
    assert rc == 0, err
    sections = [ln.strip() for ln in out.splitlines() if ln.startswith("  [")]
    assert sections == ["[model]", "[data]", "[train]", "[full]", "[dreambooth]", "[save]", "[sample]", "[launch]",
                        "[budget]"]


def test_config_errors_are_all_reported_with_file_line_and_accepted_values(tmp_path, capsys):
    p = project_with_config(tmp_path, "[train]\nlearning_rate = -1\nbatch_sise = 2\n[data]\nresolution = \"big\"\n")
    rc, out, err = check(capsys, p, "lora")
    assert rc == 1
    cfg = p / "configs" / "lora.toml"
    assert f"{cfg}:2: train.learning_rate = -1: must be > 0" in err
    assert f"{cfg}:3: train.batch_sise: unknown key; did you mean 'batch_size'?" in err
    assert f"{cfg}:5: data.resolution = 'big': must be a whole number" in err
    assert "photos" in out  # the dataset is still reported


def test_invalid_config_toml_points_at_line_and_column(tmp_path, capsys):
    p = project_with_config(tmp_path, "[train]\nepochs = = 3\n")
    rc, _, err = check(capsys, p, "lora")
    assert rc == 1 and f"{p / 'configs' / 'lora.toml'}:2:" in err and "invalid TOML" in err


def test_set_overrides_are_validated_like_the_file(tmp_path, capsys):
    p = project_with_config(tmp_path, "")
    rc, out, err = check(capsys, p, "lora", "--set", "train.batch_size=2", "--set", "train.epochs=0")
    assert rc == 1 and "train.epochs = 0: must be between 1 and 100000" in err


def test_a_base_model_that_does_not_exist_is_an_error(tmp_path, capsys):
    p = project_with_config(tmp_path, '[model]\nbase = "models/missing-folder"\n')
    rc, _, err = check(capsys, p, "lora")
    assert rc == 1 and "missing-folder" in err


def test_check_refuses_what_run_refuses_a_missing_accelerate_config_with_its_line(tmp_path, capsys):
    p = project_with_config(tmp_path, '[launch]\naccelerate_config = "ds.yaml"\n')
    rc, _, err = check(capsys, p, "lora")
    assert rc == 1
    assert f"{p / 'configs' / 'lora.toml'}:2: launch.accelerate_config = 'ds.yaml': {p / 'ds.yaml'} is not a file" in err
    assert main(["run", str(p), "lora"]) == 2 and "ds.yaml is not a file" in capsys.readouterr().err
    (p / "ds.yaml").write_text("compute_environment: LOCAL_MACHINE\n")
    assert check(capsys, p, "lora")[0] == 0


def test_dreambooth_with_an_instance_prompt_does_not_warn_about_captions_it_never_uses(tmp_path, capsys):
    p = tmp_path / "sks"
    for i in range(3):
        write_image(p / "photos" / f"{i}.png", (64, 64), caption=None if i else "word " * 90)
    (p / "configs").mkdir()
    (p / "configs" / "db.toml").write_text('method = "dreambooth"\n[dreambooth]\ninstance_prompt = "a photo of sks dog"\n'
                                           'class_prompt = "a photo of a dog"\n[model]\nbase = "tiny"\n')
    rc, out, _ = check(capsys, p, "db")
    assert rc == 0
    assert "no caption" not in out and "caption too long" not in out
    assert out.count("dreambooth.instance_prompt 'a photo of sks dog' is the text of every instance image") == 1
    assert re.search(r"^instance prompt tokens: ~?\d+ \((counted|estimated)", out, re.M) and "caption tokens" not in out
    # Without the instance prompt the trainer uses the captions, and check warns about them as before.
    rc, out, _ = check(capsys, p, "db", "--set", "dreambooth.instance_prompt=")
    assert rc == 0 and "no caption: 2 image(s)" in out and "caption too long: 1 image(s)" in out
    assert "instance_prompt" not in out.split("resolved config")[0]


def ti_project(root: Path, base: Path, extra: str = "") -> Path:
    """A textual-inversion project: one caption says the placeholder, one does not, two images have none."""
    p = root / "ti"
    write_image(p / "imgs" / "says.png", (64, 64), caption="a <shape> on white")
    write_image(p / "imgs" / "other.png", (64, 64), caption="a red circle")
    write_image(p / "imgs" / "bare1.png", (64, 64))
    write_image(p / "imgs" / "bare2.png", (64, 64))
    (p / "project.toml").write_text('name = "ti"\n[goals]\naccuracy = ["a <shape> on a beach"]\n')
    (p / "configs").mkdir()
    (p / "configs" / "ti.toml").write_text(f'method = "textual_inversion"\n[model]\nbase = "{base}"\n'
                                           '[data]\nresolution = 64\n[textual_inversion]\n'
                                           f'placeholder_token = "<shape>"\ninitializer_token = "circle"\n{extra}')
    return p


@pytest.mark.parametrize("method", ["textual_inversion", "pivotal"])
def test_textual_inversion_check_says_what_each_caption_trains_as_and_needs_no_captions(tmp_path, capsys,
                                                                                       tiny_base, method):
    p = ti_project(tmp_path, tiny_base)
    rc, out, err = check(capsys, p, "ti", "--set", f"method={method}")
    assert rc == 0, err
    assert "\nwarnings:" not in out and "bare1.png" not in out  # no "no caption" warning: TI needs none
    assert "trains every image with the placeholder '<shape>' in its text; captions are optional" in out
    assert "  1 caption(s) say '<shape>': trained as written" in out
    assert "  1 caption(s) do not: '<shape>, ' is put in front (e.g. imgs/other.png: '<shape>, a red circle')" in out
    assert "  2 image(s) with no caption: trained on '<shape>' alone" in out
    # The same project trained as a LoRA does warn, saying what the trainer does with those images.
    rc, out, _ = check(capsys, p, "ti", "--set", "method=lora")
    assert rc == 0 and "no caption: 2 image(s) — trained with an empty caption, so they tie the subject to no word" in out


def test_textual_inversion_check_warns_when_no_sample_prompt_says_the_placeholder(tmp_path, capsys, tiny_base):
    p = ti_project(tmp_path, tiny_base)
    rc, out, _ = check(capsys, p, "ti", "--set", 'sample.prompts=["a red circle"]')
    assert rc == 0
    assert ("warnings:\n  no sample prompt says textual_inversion.placeholder_token '<shape>', so the contact sheet "
            "will not show what it learns; put it in sample.prompts") in out
    assert "no sample prompt" not in check(capsys, p, "ti")[1]  # the goals say it


def test_textual_inversion_token_counts_are_of_the_caption_as_trained(tmp_path, capsys, tiny_base):
    """'<shape>' is 3 tokens to the base tokenizer but one per vector to the trainer, which also puts it
    in front of a caption that lacks it."""
    p = ti_project(tmp_path, tiny_base)
    write_image(p / "imgs" / "says_long.png", (64, 64), caption="<shape> " + "red " * 74)   # 75 as trained
    write_image(p / "imgs" / "lacks_long.png", (64, 64), caption="red " * 74)             # 76 with '<shape>, '
    rc, out, _ = check(capsys, p, "ti")
    assert rc == 0 and "as trained (placeholder put in: 1 token(s)); 1 caption(s) over 75" in out
    assert "imgs/lacks_long.png: caption too long (76 tokens" in out and "imgs/says_long.png: caption" not in out
    rc, out, _ = check(capsys, p, "ti", "--set", "textual_inversion.num_vectors=2")
    assert "2 caption(s) over 75" in out and "imgs/says_long.png: caption too long (76 tokens" in out


def test_an_invalid_project_file_is_an_error_naming_the_key(tmp_path, capsys):
    p = tmp_path / "p"
    write_image(p / "a" / "1.png", caption="x")
    (p / "project.toml").write_text('[[concepts]]\nfolder = "../outside"\n')
    rc, _, err = check(capsys, p)
    assert rc == 1 and "project.toml:2: concepts.0.folder" in err


def test_a_project_that_does_not_exist_is_an_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, _, err = check(capsys, "nope")
    assert rc == 1 and "nope: no such project" in err


def test_check_runs_as_a_command(tmp_path):
    write_image(tmp_path / "p" / "a" / "1.png", caption="x")
    r = subprocess.run([sys.executable, "-m", "tui.cli", "check", str(tmp_path / "p")], cwd=REPO,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "ok: 1 usable image(s)" in r.stdout


def test_a_config_naming_a_concept_the_project_lacks_is_an_error(tmp_path, capsys):
    p = project_with_config(tmp_path, '[data]\nconcepts = ["photos", "fotos"]\n')
    rc, _, err = check(capsys, p, "lora")
    assert rc == 1 and "data.concepts: no concept 'fotos'" in err


def test_a_mistyped_command_gets_a_did_you_mean_instead_of_a_tui_on_a_new_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["chek", "demo"]) == 2
    _, err = capsys.readouterr()
    assert "did you mean `tunelab check`?" in err and not (tmp_path / "chek").exists()
    assert main(["--version"]) == 0 and capsys.readouterr()[0].startswith("tunelab ")


def test_a_config_naming_no_base_means_sd15_from_the_cache_never_the_tiny_model(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty Hugging Face cache
    p = project_with_config(tmp_path, '[model]\nprediction_type = "auto"\n[train]\nepochs = 1\n')
    rc, _, err = check(capsys, p, "lora")
    assert rc == 1
    assert "model.base = 'stable-diffusion-v1-5/stable-diffusion-v1-5'" in err
    assert "huggingface-cli download stable-diffusion-v1-5/stable-diffusion-v1-5" in err and "tiny" in err


def test_a_relative_path_given_with_set_is_the_current_folders_and_the_run_keeps_it_absolute(tmp_path, capsys,
                                                                                            monkeypatch, tiny_base):
    import tomllib

    from engine import launch

    p = project_with_config(tmp_path, "")
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny-sd").symlink_to(tiny_base, target_is_directory=True)
    (tmp_path / "ds.yaml").write_text("compute_environment: LOCAL_MACHINE\n")
    monkeypatch.chdir(tmp_path)  # the shell's folder, above the project: paths typed here are read from here
    sets = ["model.base=models/tiny-sd", "launch.accelerate_config=ds.yaml"]
    rc, _, err = check(capsys, "projects/dogs", "lora", *[a for s in sets for a in ("--set", s)])
    assert rc == 0, err  # was: projects/dogs/models/tiny-sd does not exist
    frozen = tomllib.loads(launch.create_run(Path("projects/dogs"), "lora", sets).config_path.read_text())
    assert frozen["model"]["base"] == str(tmp_path / "models" / "tiny-sd")
    assert frozen["launch"]["accelerate_config"] == str(tmp_path / "ds.yaml")
    monkeypatch.chdir(p)  # from inside the project the same files are two folders up
    assert check(capsys, ".", "lora", "--set", "model.base=../../models/tiny-sd")[0] == 0
    rc, _, err = check(capsys, ".", "lora", "--set", "launch.accelerate_config=ds.yaml")
    assert rc == 1 and f"launch.accelerate_config = '{p / 'ds.yaml'}': {p / 'ds.yaml'} is not a file" in err


def test_set_keeps_tiny_and_a_hub_id_as_typed_and_a_config_files_path_stays_the_projects(tmp_path, capsys,
                                                                                         monkeypatch, tiny_base):
    p = project_with_config(tmp_path, '[model]\nbase = "models/tiny-sd"\n')
    (p / "models").mkdir()
    (p / "models" / "tiny-sd").symlink_to(tiny_base, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    assert check(capsys, "projects/dogs", "lora")[0] == 0  # the file's relative path: the project's, as before
    assert check(capsys, "projects/dogs", "lora", "--set", "model.base=tiny")[0] == 0
    rc, _, err = check(capsys, "projects/dogs", "lora", "--set", "model.base=owner/name")
    assert rc == 1 and "model.base = 'owner/name': " in err and "no hub model owner/name in the local" in err
